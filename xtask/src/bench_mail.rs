//! `cargo xtask bench mail`: how fast one release runtime's outbox worker hands mail to a
//! real SMTP server (Mailpit). The messages are written to the outbox in one transaction, as
//! a burst of orders would, and timed from its commit until the outbox has sent them all; then
//! Mailpit's copy is checked for duplicates and losses (by `Message-ID`).
//!
//! Last line: `mail-bench messages=.. messages_per_s=.. duplicates=.. lost=..`

use std::collections::HashSet;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::bench_runtime::{Server, build_runtime, free_port, runtime_env, wait_ready};

pub fn run(messages: usize) -> Result<()> {
    let binary = build_runtime()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    // block_on keeps the datastores' processes on this thread, which outlives them.
    runtime.block_on(async {
        let run = tiqzy_e2e::target_dir().join("bench-mail");
        let _ = std::fs::remove_dir_all(&run);
        std::fs::create_dir_all(run.join("logs"))?;
        let mail_dir = run.join("mailpit");
        let (postgres, redis, mailpit) = tokio::try_join!(
            tiqzy_e2e::Postgres::start(&run),
            tiqzy_e2e::Redis::start(&run),
            tiqzy_e2e::Mailpit::start(&mail_dir),
        )?;
        let (db, connection) =
            tokio_postgres::connect(&postgres.admin_config("postgres"), tokio_postgres::NoTls)
                .await?;
        tokio::spawn(connection);
        db.simple_query("CREATE DATABASE bench").await?;

        let port = free_port()?;
        let mut env = runtime_env(&postgres.admin_url("bench"), &redis.admin_url(), port);
        env.push(("TIQZY_SMTP_HOST", "127.0.0.1".to_owned()));
        env.push(("TIQZY_SMTP_PORT", mailpit.smtp_port.to_string()));
        env.push(("TIQZY_SMTP_TLS", "none".to_owned()));
        env.push(("TIQZY_MAIL_FROM", "shop@bench.example".to_owned()));
        let _server = Server(
            Command::new(&binary)
                .envs(env)
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(run.join("logs/runtime.log"))?)
                .spawn()
                .context("starting tiqzy-runtime")?,
        );
        let http = reqwest::Client::new();
        wait_ready(&http, &format!("http://127.0.0.1:{port}")).await?;

        let (bench_db, connection) =
            tokio_postgres::connect(&postgres.admin_config("bench"), tokio_postgres::NoTls).await?;
        tokio::spawn(connection);
        let count = i64::try_from(messages)?;
        // Written the way `mail::enqueue` writes an order link, all in one transaction.
        bench_db
            .execute(
                "INSERT INTO mail_outbox (id, recipient, message)
                 SELECT gen_random_uuid(), 'buyer@bench.example',
                        jsonb_build_object('kind', 'order_link', 'to', 'buyer@bench.example',
                                           'order_url', 'http://bench.localhost/orders/n' || n)
                 FROM generate_series(1, $1::bigint) AS n",
                &[&count],
            )
            .await?;
        let started = Instant::now();
        let deadline = started + Duration::from_secs(1800);
        loop {
            let row = bench_db
                .query_one(
                    "SELECT count(*) FROM mail_outbox WHERE sent_at IS NULL AND failed_at IS NULL",
                    &[],
                )
                .await?;
            if row.get::<_, i64>(0) == 0 {
                break;
            }
            if Instant::now() > deadline {
                bail!(
                    "the outbox did not empty in 30 minutes; see {}",
                    run.display()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let took = started.elapsed();
        let arrived = mailpit.search("to:\"buyer@bench.example\"").await?;
        let unique: HashSet<&str> = arrived.iter().map(|m| m.message_id.as_str()).collect();
        let duplicates = arrived.len() - unique.len();
        let lost = messages.saturating_sub(unique.len());
        eprintln!("mail bench: {messages} messages sent in {took:.2?}");
        println!(
            "mail-bench messages={messages} messages_per_s={:.0} duplicates={duplicates} \
             lost={lost}",
            messages as f64 / took.as_secs_f64()
        );
        Ok(())
    })
}
