//! The tower layer wraps each request in a transaction: it commits when the
//! handler succeeds (and only then sends the cookie), aborts when the handler
//! fails or answers 5xx, re-runs the request on conflicts, and turns a commit
//! failure into a clear 500.

#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;

use axum::{Router, body::Body, routing::get};
use http::{Request, StatusCode, header};
use http_body_util::BodyExt;
use keel_session::{Session, SessionError, SessionLayer};
use keel_store::{SessionAdmin, StoreError};
use serde::{Serialize, Serializer, ser::Error as _};
use tower::ServiceExt;

const PKG: &str = "keel.demo";

fn count(session: &Session) -> Result<u64, SessionError> {
    Ok(match session.get(PKG)? {
        Some(data) => data.get::<u64>("count")?.unwrap_or(0),
        None => 0,
    })
}

fn increment(session: &Session) -> Result<u64, SessionError> {
    let data = session.pkg(PKG)?;
    let n = data.get::<u64>("count")?.unwrap_or(0) + 1;
    data.insert("count", n)?;
    Ok(n)
}

struct NoPickle;

impl Serialize for NoPickle {
    fn serialize<S: Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
        Err(S::Error::custom("I cannot be pickled"))
    }
}

fn app(h: &common::Harness) -> Router {
    Router::new()
        .route(
            "/count",
            get(|s: Session| async move { count(&s).map(|n| n.to_string()) })
                .post(|s: Session| async move { increment(&s).map(|n| n.to_string()) }),
        )
        .route(
            "/fail",
            axum::routing::post(|s: Session| async move {
                increment(&s)?;
                Ok::<_, SessionError>((StatusCode::INTERNAL_SERVER_ERROR, "handler failed"))
            }),
        )
        .route(
            "/oops",
            axum::routing::post(|s: Session| async move {
                increment(&s)?;
                s.pkg(PKG)?.insert("oops", NoPickle)?;
                Ok::<_, SessionError>("unreachable: the commit fails")
            }),
        )
        .route(
            "/echo",
            axum::routing::post(|s: Session, body: String| async move {
                increment(&s)?;
                Ok::<_, SessionError>(body)
            }),
        )
        .layer(SessionLayer::new(h.manager.clone()).with_max_body_bytes(1024))
}

async fn call(
    app: &Router,
    method: &str,
    uri: &str,
    cookie: Option<&str>,
    body: &str,
) -> (StatusCode, Option<String>, String) {
    let mut request = Request::builder().method(method).uri(uri);
    if let Some(id) = cookie {
        request = request.header(header::COOKIE, format!("{}={id}", common::COOKIE));
    }
    let response = app
        .clone()
        .oneshot(request.body(Body::from(body.to_owned())).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let set_cookie = response.headers().get(header::SET_COOKIE).map(|v| {
        let parsed = cookie::Cookie::parse(v.to_str().unwrap().to_owned()).unwrap();
        parsed.value().to_owned()
    });
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (
        status,
        set_cookie,
        String::from_utf8(body.to_vec()).unwrap(),
    )
}

#[tokio::test]
async fn a_write_commits_and_sets_the_cookie_and_a_read_sets_none() {
    let h = common::Harness::new();
    let app = app(&h);
    let (status, cookie, body) = call(&app, "GET", "/count", None, "").await;
    assert_eq!((status, cookie, body.as_str()), (StatusCode::OK, None, "0"));

    let (status, cookie, body) = call(&app, "POST", "/count", None, "").await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "1"));
    let id = cookie.expect("the request that created the session sets the cookie");

    let (_, cookie, body) = call(&app, "POST", "/count", Some(&id), "").await;
    assert_eq!((cookie, body.as_str()), (None, "2"));
    let (_, _, body) = call(&app, "GET", "/count", Some(&id), "").await;
    assert_eq!(body, "2");
}

#[tokio::test]
async fn a_5xx_from_the_handler_aborts_and_sends_no_cookie() {
    let h = common::Harness::new();
    let app = app(&h);
    let (status, cookie, _) = call(&app, "POST", "/fail", None, "").await;
    assert_eq!((status, cookie), (StatusCode::INTERNAL_SERVER_ERROR, None));
    assert_eq!(h.container.stats().unwrap().sessions, 0);

    let (_, cookie, _) = call(&app, "POST", "/count", None, "").await;
    let id = cookie.unwrap();
    call(&app, "POST", "/fail", Some(&id), "").await;
    let (_, _, body) = call(&app, "GET", "/count", Some(&id), "").await;
    assert_eq!(body, "1", "the failed request's increment was aborted");
}

#[tokio::test]
async fn a_commit_failure_is_a_500_naming_the_key_and_nothing_is_written() {
    let h = common::Harness::new();
    let app = app(&h);
    let (_, cookie, _) = call(&app, "POST", "/count", None, "").await;
    let id = cookie.unwrap();
    let (status, cookie, body) = call(&app, "POST", "/oops", Some(&id), "").await;
    assert_eq!((status, cookie), (StatusCode::INTERNAL_SERVER_ERROR, None));
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(json["key"], "oops");
    assert_eq!(json["package"], PKG);
    // A short, stable message naming the value; not the serializer's own
    // words, nor internal names (they go to the log under the request id).
    let error = json["error"].as_str().unwrap();
    assert!(
        error.contains("\"oops\"") && error.contains("cannot be serialized"),
        "{error}"
    );
    for internal in [
        "I cannot be pickled",
        "tpc_vote",
        "keel-store/",
        "data manager",
    ] {
        assert!(!body.contains(internal), "{internal} in {body}");
    }
    assert_eq!(json["request_id"].as_str().unwrap().len(), 11, "{body}");
    let (_, _, body) = call(&app, "GET", "/count", Some(&id), "").await;
    assert_eq!(body, "1");
}

#[tokio::test]
async fn a_new_session_whose_commit_fails_sends_no_cookie() {
    let h = common::Harness::new();
    let app = app(&h);
    let (status, cookie, _) = call(&app, "POST", "/oops", None, "").await;
    assert_eq!((status, cookie), (StatusCode::INTERNAL_SERVER_ERROR, None));
    assert_eq!(h.container.stats().unwrap().sessions, 0);
}

/// An app whose `POST /count` yields between reading and writing the count
/// (so concurrent requests interleave), retrying conflicts up to `attempts`
/// times with backoff up to `max_backoff_ms`; with its manager.
fn racing_app(attempts: u32, max_backoff_ms: u64) -> (Arc<Router>, keel_session::SessionManager) {
    let h = common::Harness::new();
    let manager = h.manager.clone().with_transaction_manager(
        keel_txn::TransactionManager::new().with_retry_policy(
            keel_txn::RetryPolicy::default()
                .with_attempts(attempts)
                .with_backoff(
                    std::time::Duration::from_micros(100),
                    std::time::Duration::from_millis(max_backoff_ms),
                ),
        ),
    );
    let app = Arc::new(
        Router::new()
            .route(
                "/count",
                axum::routing::post(|s: Session| async move {
                    let data = s.pkg(PKG)?;
                    let n = data.get::<u64>("count")?.unwrap_or(0) + 1;
                    tokio::task::yield_now().await;
                    data.insert("count", n)?;
                    Ok::<_, SessionError>(n.to_string())
                }),
            )
            .layer(SessionLayer::new(manager.clone())),
    );
    (app, manager)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn thirty_two_concurrent_increments_of_one_client_give_exactly_thirty_two() {
    let (app, manager) = racing_app(64, 5);
    let (_, cookie, _) = call(&app, "POST", "/count", None, "").await;
    let id = cookie.unwrap();
    let mut tasks = Vec::new();
    for _ in 0..32 {
        let (app, id) = (Arc::clone(&app), id.clone());
        tasks.push(tokio::spawn(async move {
            call(&app, "POST", "/count", Some(&id), "").await.0
        }));
    }
    let mut ok = 0;
    for task in tasks {
        if task.await.unwrap() == StatusCode::OK {
            ok += 1;
        }
    }
    assert_eq!(ok, 32);
    let (_, _, body) = call(&app, "POST", "/count", Some(&id), "").await;
    assert_eq!(body, "34", "1 + 32 + this one: no update lost");
    assert!(
        manager.transaction_manager().stats().retries > 0,
        "the requests really did conflict"
    );
}

#[tokio::test]
async fn the_request_body_is_replayed_on_retry_and_bounded() {
    let h = common::Harness::new();
    let app = app(&h);
    let (status, _, body) = call(&app, "POST", "/echo", None, "hello").await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "hello"));
    let big = "x".repeat(2048);
    let (status, cookie, body) = call(&app, "POST", "/echo", None, &big).await;
    assert_eq!((status, cookie), (StatusCode::PAYLOAD_TOO_LARGE, None));
    assert!(body.contains("1024"));
}

#[tokio::test]
async fn a_conflict_on_every_attempt_gives_a_503() {
    let h = common::Harness::new();
    let manager = h.manager.clone().with_transaction_manager(
        keel_txn::TransactionManager::new().with_retry_policy(
            keel_txn::RetryPolicy::default()
                .with_attempts(2)
                .with_backoff(std::time::Duration::ZERO, std::time::Duration::ZERO),
        ),
    );
    let conflicts = Router::new()
        .route(
            "/c",
            get(|| async {
                SessionError::Store(StoreError::Conflict {
                    client: keel_store::ClientKey::from_client_id("x"),
                    what: "test".to_owned(),
                })
            }),
        )
        .layer(SessionLayer::new(manager.clone()));
    let (status, _, body) = call(&conflicts, "GET", "/c", None, "").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(body.contains("2 attempts"), "{body}");
    assert_eq!(manager.transaction_manager().stats().retries, 1);
}

/// Dropping an app releases its containers (and with them, for redb, the
/// open database file), however many threads served requests through it:
/// nothing per thread or per process keeps a layer alive.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_app_releases_its_containers_after_serving_on_several_threads() {
    let h = common::Harness::new();
    let container = Arc::downgrade(&h.container);
    let router = app(&h);
    let (_, cookie, _) = call(&router, "POST", "/count", None, "").await;
    let cookie = cookie.unwrap();
    let served: Vec<_> = (0..8)
        .map(|_| {
            let router = router.clone();
            let cookie = cookie.clone();
            tokio::spawn(async move { call(&router, "GET", "/count", Some(&cookie), "").await })
        })
        .collect();
    for request in served {
        assert_eq!(request.await.unwrap().2, "1");
    }
    drop(router);
    drop(h);
    assert!(
        container.upgrade().is_none(),
        "the container outlived the app that used it"
    );
}

/// 64 concurrent increments of one session with only 4 attempts each: racing
/// optimistically, most would lose every attempt (503); taking turns after
/// their first conflict, every one commits.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_hot_session_takes_turns_so_no_request_fails_for_contention_alone() {
    let (app, manager) = racing_app(4, 2);
    let (_, cookie, _) = call(&app, "POST", "/count", None, "").await;
    let id = cookie.unwrap();
    let mut tasks = Vec::new();
    for _ in 0..64 {
        let (app, id) = (Arc::clone(&app), id.clone());
        tasks.push(tokio::spawn(async move {
            call(&app, "POST", "/count", Some(&id), "").await.0
        }));
    }
    let mut statuses = Vec::new();
    for task in tasks {
        statuses.push(task.await.unwrap());
    }
    let failed = statuses.iter().filter(|s| **s != StatusCode::OK).count();
    assert_eq!(failed, 0, "{statuses:?}");
    let (_, _, body) = call(&app, "POST", "/count", Some(&id), "").await;
    assert_eq!(body, "66", "1 + 64 + this one: no update lost");
    assert!(
        manager.transaction_manager().stats().retries > 0,
        "the requests really did conflict"
    );
}
