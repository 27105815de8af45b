//! A library user's first hour: the README's app, in its short form, keeps
//! its users across a restart (the signing keys live in the container's
//! file, not in the process).

#![allow(clippy::unwrap_used)]

use axum::{Router, body::Body, routing::post};
use http::{Request, header};
use http_body_util::BodyExt;
use keel_session::{KEY_RING_SETTING, RedbContainer, Session, SessionError, SessionLayer};
use keel_store::SessionAdmin;
use tower::ServiceExt;

async fn visit(session: Session) -> Result<String, SessionError> {
    let data = session.pkg("my.app")?;
    let visits = data.get::<u64>("visits")?.unwrap_or(0) + 1;
    data.insert("visits", visits)?;
    Ok(format!("visit number {visits}"))
}

/// The README's `app()`, on `path`.
fn app(path: &std::path::Path) -> Router {
    let layer = SessionLayer::from_container(RedbContainer::open(path).unwrap()).unwrap();
    Router::new().route("/", post(visit)).layer(layer)
}

/// POST / with `cookie`: the body, and the cookie the response sets.
async fn post_visit(app: &Router, cookie: Option<&str>) -> (String, Option<String>) {
    let mut request = Request::builder().method("POST").uri("/");
    if let Some(cookie) = cookie {
        request = request.header(header::COOKIE, cookie);
    }
    let response = app
        .clone()
        .oneshot(request.body(Body::empty()).unwrap())
        .await
        .unwrap();
    let set = response
        .headers()
        .get(header::SET_COOKIE)
        .map(|v| v.to_str().unwrap().split(';').next().unwrap().to_owned());
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (String::from_utf8(body.to_vec()).unwrap(), set)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_app_keeps_its_users_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sessions.redb");

    let first = app(&path);
    let (body, cookie) = post_visit(&first, None).await;
    assert_eq!(body, "visit number 1");
    let cookie = cookie.expect("the first write sets the cookie");
    drop(first); // the process ends: the file is released

    let second = app(&path);
    let (body, _) = post_visit(&second, Some(&cookie)).await;
    assert_eq!(
        body, "visit number 2",
        "the old cookie still reads its data"
    );
    drop(second);

    // The ring is in the file, under the setting `keel serve` uses.
    let container = RedbContainer::open(&path).unwrap();
    assert!(container.load_setting(KEY_RING_SETTING).unwrap().is_some());
}
