//! On-sale rushes against the hold allocator (group commit): buyers of one ticket type who
//! arrive together are granted in one transaction. Whatever the batching, nothing is
//! oversold, every cap and limit holds, a refused buyer is told why, and a killed runtime or
//! a second replica loses or doubles nothing.

use std::collections::HashMap;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use uuid::Uuid;

use crate::inventory::assert_books_balance;
use crate::support::{Options, TestApp, problem};

/// The client address of buyer `n`, as the router forwards it.
fn buyer(n: usize) -> String {
    format!("198.18.{}.{}", n / 250, n % 250 + 1)
}

/// The sum and count of `tiqzy_hold_batch_size`: requests decided, transactions used.
async fn batches(app: &TestApp) -> (f64, f64) {
    let metrics = app.metrics().await;
    let value = |series| tiqzy_e2e::sample(&metrics, series).unwrap_or(0.0);
    (
        value("tiqzy_hold_batch_size_sum"),
        value("tiqzy_hold_batch_size_count"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rush_of_mixed_quantities_is_granted_in_batches_within_every_cap_and_limit() {
    let app = Arc::new(
        TestApp::spawn_with(Options {
            env: &[("TIQZY_MAX_TICKETS_PER_CLIENT_PER_EVENT", "4")],
            ..Options::default()
        })
        .await,
    );
    let (_, tt) = app.seed_event(150, 2_500, 3).await;
    // 120 clients each send three holds at once (1, 2 and 3 tickets, or 4: over the
    // per-order limit): 720 tickets asked for, 150 on sale, at most 4 per client.
    let mut buyers = tokio::task::JoinSet::new();
    for n in 0..120 {
        for quantity in [1, 2, if n % 10 == 0 { 4 } else { 3 }] {
            let app = app.clone();
            buyers.spawn(async move {
                let held = app.hold_via(&buyer(n), tt, quantity).await;
                let status = held.status().as_u16();
                let answer = if status == 201 {
                    held.json::<Value>().await.expect("hold")["items"][0]["quantity"].clone()
                } else {
                    problem(held).await.1["type"].clone()
                };
                (n, quantity, status, answer)
            });
        }
    }
    let mut per_client: HashMap<usize, i64> = HashMap::new();
    let mut reasons: HashMap<String, u32> = HashMap::new();
    while let Some(answer) = buyers.join_next().await {
        let (n, quantity, status, answer) = answer.expect("task");
        match status {
            201 => {
                assert_eq!(answer.as_i64(), Some(quantity), "a hold of what was asked");
                *per_client.entry(n).or_default() += quantity;
            }
            409 | 422 => {
                let kind = answer.as_str().expect("problem type").to_owned();
                *reasons.entry(kind).or_default() += 1;
            }
            other => panic!("unexpected status {other}: {answer}"),
        }
    }
    let held: i64 = per_client.values().sum();
    assert!(
        per_client.values().all(|&n| n <= 4),
        "a client above the cap: {per_client:?}"
    );
    // The last tickets always find a one-ticket buyer among 120.
    assert!(
        held >= 148,
        "only {held} of 150 held; refusals: {reasons:?}"
    );
    assert_eq!(
        app.stock(tt).await,
        (150, 0, i32::try_from(held).expect("held"))
    );
    assert_books_balance(&app, tt).await;
    for kind in reasons.keys() {
        assert!(
            ["sold-out", "ticket-cap", "invalid-request"]
                .iter()
                .any(|k| kind.ends_with(k)),
            "refused for {kind}"
        );
    }
    assert_eq!(
        reasons.len(),
        3,
        "each kind of refusal was met: {reasons:?}"
    );
    let (requests, transactions) = batches(&app).await;
    assert_eq!(requests, 360.0, "every request went through the allocator");
    assert!(
        transactions < requests,
        "360 buyers at once took {transactions} transactions: no batching"
    );
}

/// A runtime as a pod runs it: the release of the test's build, its own port, the app's
/// database. Killed (SIGKILL) when dropped.
struct Replica {
    process: Child,
    url: String,
}

impl Replica {
    async fn start(vars: &HashMap<String, String>) -> Self {
        let port = tiqzy_e2e::free_port().expect("free port");
        let process = Command::new(env!("CARGO_BIN_EXE_tiqzy-runtime"))
            .env_clear()
            .envs(vars)
            .env("TIQZY_LISTEN_ADDR", format!("127.0.0.1:{port}"))
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting tiqzy-runtime");
        let replica = Self {
            process,
            url: format!("http://127.0.0.1:{port}"),
        };
        let http = reqwest::Client::new();
        for _ in 0..600 {
            if let Ok(r) = http.get(format!("{}/readyz", replica.url)).send().await
                && r.status().is_success()
            {
                return replica;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("the replica did not become ready");
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}

/// A transaction of another session holding the counter row of `tt`: a batch stops on it,
/// inside its own transaction, until it is rolled back.
async fn hold_the_counter(app: &TestApp, tt: Uuid) -> sqlx::Transaction<'static, sqlx::Postgres> {
    let mut blocker = app.state.db.begin().await.expect("begin");
    sqlx::query("SELECT 1 FROM ticket_types WHERE id = $1 FOR UPDATE")
        .bind(tt)
        .execute(&mut *blocker)
        .await
        .expect("lock the counter");
    blocker
}

/// Waits (30 s at most) until a batch of this test's database is held up on a counter lock.
async fn a_batch_waits_on_the_counter(app: &TestApp) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        // (The pattern is split so that this query's own text does not match it.)
        let waiting: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity
             WHERE datname = current_database() AND wait_event_type = 'Lock'
               AND query LIKE '%FOR UPDATE ' || 'OF tt%'",
        )
        .fetch_one(&app.state.db)
        .await
        .expect("activity");
        if waiting > 0 {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no batch reached the counter"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Buyers `from..to`, each holding one ticket at `url`: the ids of the holds granted.
async fn rush(url: &str, tt: Uuid, buyers: std::ops::Range<usize>) -> Vec<Uuid> {
    let http = reqwest::Client::new();
    let mut rush = tokio::task::JoinSet::<Option<Uuid>>::new();
    for n in buyers {
        let (http, url) = (http.clone(), url.to_owned());
        rush.spawn(async move {
            let held = http
                .post(format!("{url}/api/holds"))
                .header("x-forwarded-for", buyer(n))
                .json(&serde_json::json!({ "ticket_type_id": tt, "quantity": 1 }))
                .send()
                .await
                .ok()?;
            if held.status() != 201 {
                return None;
            }
            let hold: Value = held.json().await.ok()?;
            hold["id"].as_str()?.parse().ok()
        });
    }
    let mut granted = Vec::new();
    while let Some(id) = rush.join_next().await {
        granted.extend(id.expect("task"));
    }
    granted
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_replicas_batching_for_one_event_sell_exactly_the_capacity() {
    let (app, vars) = TestApp::spawn_keeping_vars(Options::default()).await;
    let (_, tt) = app.seed_event(200, 2_500, 4).await;
    let (a, b) = tokio::join!(Replica::start(&vars), Replica::start(&vars));
    let (from_a, from_b) = tokio::join!(rush(&a.url, tt, 0..300), rush(&b.url, tt, 300..600));
    assert_eq!(
        from_a.len() + from_b.len(),
        200,
        "600 buyers over two replicas for 200 tickets"
    );
    assert_eq!(app.stock(tt).await, (200, 0, 200));
    assert_books_balance(&app, tt).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_runtime_killed_mid_rush_loses_and_doubles_no_ticket() {
    let (app, vars) = TestApp::spawn_keeping_vars(Options::default()).await;
    let (_, tt) = app.seed_event(400, 2_500, 4).await;
    let mut replica = Replica::start(&vars).await;
    let url = replica.url.clone();
    let rushing = tokio::spawn(async move { rush(&url, tt, 0..600).await });
    // Let the first batches commit, then kill the pod while the rest are in flight.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while app.stock(tt).await.2 < 20 {
        assert!(tokio::time::Instant::now() < deadline, "no hold was placed");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    replica.process.kill().expect("SIGKILL");
    replica.process.wait().expect("reaped");
    let answered = rushing.await.expect("rush");

    // Every hold a buyer was told about is there, and the counter counts exactly the holds.
    let live: Vec<Uuid> =
        sqlx::query_scalar("SELECT id FROM holds WHERE ticket_type_id = $1 AND state = 'active'")
            .bind(tt)
            .fetch_all(&app.state.db)
            .await
            .expect("holds");
    for id in &answered {
        assert!(live.contains(id), "hold {id} was granted but is gone");
    }
    let (capacity, sold, held) = app.stock(tt).await;
    assert_eq!(i64::from(held), i64::try_from(live.len()).expect("count"));
    assert_eq!(sold, 0);
    assert_books_balance(&app, tt).await;
    // The stock the dead pod did not grant is still for sale, exactly.
    let rest = rush(
        &app.url,
        tt,
        1_000..1_000 + 2 * usize::try_from(capacity).expect("cap"),
    )
    .await;
    assert_eq!(i32::try_from(rest.len()).expect("n") + held, capacity);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_runtime_killed_inside_a_batch_commits_nothing_of_it() {
    let (app, vars) = TestApp::spawn_keeping_vars(Options::default()).await;
    let (_, tt) = app.seed_event(100, 2_500, 4).await;
    let mut replica = Replica::start(&vars).await;
    // Another session holds the counter row, so the replica's first batch stops inside its
    // transaction, on that lock, with its buyers waiting for it.
    let blocker = hold_the_counter(&app, tt).await;
    let url = replica.url.clone();
    let rushing = tokio::spawn(async move { rush(&url, tt, 0..50).await });
    a_batch_waits_on_the_counter(&app).await;
    replica.process.kill().expect("SIGKILL");
    replica.process.wait().expect("reaped");
    blocker.rollback().await.expect("release the counter");
    let answered = rushing.await.expect("rush");
    assert!(
        answered.is_empty(),
        "no buyer of a batch that never committed is told yes"
    );

    // The batch's session ends when the server next writes to the dead process; until then
    // it may still hold the row. Its transaction is rolled back whole.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while sqlx::query_scalar::<_, i64>(
        // (The pattern is split so that this query's own text does not match it.)
        "SELECT count(*) FROM pg_stat_activity
         WHERE datname = current_database() AND query LIKE '%FOR UPDATE ' || 'OF tt%'",
    )
    .fetch_one(&app.state.db)
    .await
    .expect("activity")
        > 0
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the dead batch's session lingers"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let holds: i64 = sqlx::query_scalar("SELECT count(*) FROM holds WHERE ticket_type_id = $1")
        .bind(tt)
        .fetch_one(&app.state.db)
        .await
        .expect("holds");
    assert_eq!(holds, 0, "nothing of the killed batch was written");
    assert_eq!(app.stock(tt).await, (100, 0, 0));
    assert_books_balance(&app, tt).await;
    // All of it is still for sale, to the next buyers.
    assert_eq!(rush(&app.url, tt, 100..300).await.len(), 100);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn within_a_batch_buyers_are_served_in_the_order_they_came() {
    let app = Arc::new(TestApp::spawn().await);
    let (_, tt) = app.seed_event(5, 2_500, 4).await;
    // The counter row is held elsewhere: the first buyer's batch waits on it, and the next
    // buyers queue up behind it, in the order they come (0.3 s apart), for the next batch.
    let blocker = hold_the_counter(&app, tt).await;
    let mut asked = Vec::new();
    for (n, quantity) in [(0, 1), (1, 3), (2, 3), (3, 1), (4, 2)] {
        let buying = app.clone();
        asked.push(tokio::spawn(async move {
            let app = buying;
            let held = app.hold_via(&buyer(n), tt, quantity).await;
            let status = held.status().as_u16();
            let kind = if status == 201 {
                "held".to_owned()
            } else {
                let (_, body) = problem(held).await;
                body["type"]
                    .as_str()
                    .unwrap_or("?")
                    .rsplit('/')
                    .next()
                    .unwrap_or("?")
                    .to_owned()
            };
            (n, kind)
        }));
        if n == 0 {
            a_batch_waits_on_the_counter(&app).await;
        } else {
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }
    blocker.rollback().await.expect("release the counter");
    let mut answers = Vec::new();
    for buyer in asked {
        answers.push(buyer.await.expect("buyer"));
    }
    // 5 tickets: the first buyer takes 1; of the next batch the first asking for 3 gets them,
    // the second asking for 3 does not fit, the one after asking for 1 still does, and the
    // last asking for 2 finds none left.
    assert_eq!(
        answers,
        [
            (0, "held".to_owned()),
            (1, "held".to_owned()),
            (2, "sold-out".to_owned()),
            (3, "held".to_owned()),
            (4, "sold-out".to_owned()),
        ]
    );
    assert_eq!(app.stock(tt).await, (5, 0, 5));
    assert_books_balance(&app, tt).await;
}
