//! "Find my tickets": ask for a sign-in link, open it from the mail, confirm, and see every
//! order and ticket of the address. The link's page asks for a click before using the link,
//! so a mail scanner that fetches links does not use it up.

use axum::Form;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use minijinja::context;

use super::EmailForm;
use super::render::{html, page, render, see_other};
use crate::domain::Email;
use crate::http::ClientId;
use crate::http::session::{SignedIn, cookie_token, end_cookie, start_cookie};
use crate::identity;
use crate::state::AppState;

pub async fn my_tickets(State(state): State<AppState>, signed_in: SignedIn) -> Response {
    let outcome = async {
        let Some(session) = signed_in.0 else {
            return render(&state, "sign_in.html", context! { sent => false }).map(html);
        };
        let locale = &state.config.locale;
        let orders: Vec<_> = identity::orders_of(&state, &session)
            .await?
            .into_iter()
            .map(|view| {
                context! {
                    state => view.order.state, token => view.order.access_token,
                    created_at => view.order.created_at, total => locale.money(view.order.total),
                    tickets => view.tickets,
                }
            })
            .collect();
        render(
            &state,
            "my_tickets.html",
            context! { email => session.email, orders },
        )
        .map(html)
    }
    .await;
    page(&state, outcome)
}

pub async fn ask_for_link(
    State(state): State<AppState>,
    client: ClientId,
    Form(form): Form<EmailForm>,
) -> Response {
    let outcome = async {
        let email = Email::parse(&form.email)?;
        identity::request_sign_in(&state, &email, &client.0).await?;
        render(&state, "sign_in.html", context! { sent => true }).map(html)
    }
    .await;
    page(&state, outcome)
}

pub async fn link(State(state): State<AppState>, Path(token): Path<String>) -> Response {
    let outcome = render(&state, "sign_in_link.html", context! { token }).map(html);
    page(&state, outcome)
}

pub async fn follow_link(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(token): Path<String>,
) -> Response {
    let outcome = async {
        let started = identity::sign_in(&state, &token).await?;
        Ok((
            [start_cookie(&headers, &started.cookie_token)],
            see_other("/my-tickets"),
        )
            .into_response())
    }
    .await;
    page(&state, outcome)
}

pub async fn sign_out(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let outcome = async {
        if let Some(token) = cookie_token(&headers) {
            identity::sign_out(&state, &token).await?;
        }
        Ok(([end_cookie()], see_other("/my-tickets")).into_response())
    }
    .await;
    page(&state, outcome)
}
