//! CSRF protection: a session's token is random, kept in the session (created
//! lazily like the session itself) and changed by `cycle_id`; the opt-in
//! `CsrfLayer` lets safe methods through untouched and refuses unsafe ones
//! without the session's token (header or form field) with a 403 JSON body,
//! never creating a session and never calling the handler.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::{
    Arc,
    atomic::{AtomicU32, Ordering},
};

use axum::{
    Router,
    body::Body,
    routing::{get, post},
};
use common::{Cookie, Harness, finish};
use http::{Request, StatusCode, header};
use http_body_util::BodyExt;
use keel_session::{
    CSRF_PACKAGE, ContainerRegistry, CsrfLayer, Session, SessionError, SessionLayer,
};
use keel_store::{ManualClock, RedbContainer, SessionAdmin, SessionContainer};
use tower::ServiceExt;

// --- the token in the session ---

#[test]
fn csrf_token_creates_the_session_lazily_and_keeps_one_token_per_session() {
    let h = Harness::new();
    let s = h.get(None);
    let token = s.csrf_token().unwrap();
    assert_eq!(token.as_str().len(), 43);
    let Cookie::Set(id) = finish(&s) else {
        panic!("creating the token created the session and its cookie")
    };

    let s = h.get(Some(&id));
    assert_eq!(
        s.csrf_token().unwrap(),
        token,
        "the same token next request"
    );
    assert_eq!(finish(&s), Cookie::None);

    let other = h.get(None);
    assert_ne!(
        other.csrf_token().unwrap(),
        token,
        "each session has its own"
    );
}

#[test]
fn the_token_is_kept_under_the_reserved_package() {
    let h = Harness::new();
    let s = h.post(None);
    let token = s.csrf_token().unwrap();
    let stored = s.value::<String>(CSRF_PACKAGE, "token").unwrap();
    assert_eq!(stored.as_deref(), Some(token.as_str()));
    assert_eq!(CSRF_PACKAGE, "keel.csrf");
}

#[test]
fn verifying_a_token_never_creates_a_session() {
    let h = Harness::new();
    for s in [h.get(None), h.post(None)] {
        assert!(!s.verify_csrf_token("guess").unwrap());
        assert!(!s.verify_csrf_token("").unwrap());
        assert!(s.client_key().is_none());
        assert_eq!(finish(&s), Cookie::None);
    }
    assert_eq!(h.container.stats().unwrap().sessions, 0);
}

#[test]
fn a_session_without_a_token_accepts_none() {
    let h = Harness::new();
    let id = common::write(&h, None, "my.app", "x", 1);
    let s = h.post(Some(&id));
    assert!(!s.verify_csrf_token("").unwrap());
    assert!(!s.verify_csrf_token("guess").unwrap());
    assert!(
        s.get(CSRF_PACKAGE).unwrap().is_none(),
        "nothing was created"
    );
}

#[test]
fn cycle_id_changes_the_token_and_the_old_one_stops_working() {
    let h = Harness::new();
    let s = h.post(None);
    s.pkg("my.app").unwrap().insert("x", 1u8).unwrap();
    let before = s.csrf_token().unwrap();
    let Cookie::Set(old_id) = finish(&s) else {
        panic!("a new session")
    };

    // Login: a new id, the data kept, the token dropped.
    let s = h.post(Some(&old_id));
    s.cycle_id().unwrap();
    assert!(!s.verify_csrf_token(before.as_str()).unwrap());
    let Cookie::Set(new_id) = finish(&s) else {
        panic!("a new id")
    };

    let s = h.post(Some(&new_id));
    assert_eq!(s.value::<u8>("my.app", "x").unwrap(), Some(1));
    assert!(!s.verify_csrf_token(before.as_str()).unwrap());
    let after = s.csrf_token().unwrap();
    assert_ne!(after, before);
    assert!(s.verify_csrf_token(after.as_str()).unwrap());
    finish(&s);
}

#[test]
fn cycle_id_in_the_request_that_made_the_token_changes_it_too() {
    let h = Harness::new();
    let s = h.post(None);
    let before = s.csrf_token().unwrap();
    s.cycle_id().unwrap();
    let after = s.csrf_token().unwrap();
    assert_ne!(after, before);
    assert!(!s.verify_csrf_token(before.as_str()).unwrap());
    assert!(s.verify_csrf_token(after.as_str()).unwrap());
}

#[test]
fn cycle_id_changes_the_token_in_a_redb_container_too() {
    let dir = std::env::temp_dir().join(format!("keel-csrf-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let container = Arc::new(RedbContainer::open(dir.join("s.redb")).unwrap());
    let h = Harness::with_registry(
        ContainerRegistry::new().with_default(container as Arc<dyn SessionContainer>),
        ManualClock::new(1_000_000),
    );
    let s = h.post(None);
    let before = s.csrf_token().unwrap();
    let Cookie::Set(id) = finish(&s) else {
        panic!("a new session")
    };
    let s = h.post(Some(&id));
    assert!(s.verify_csrf_token(before.as_str()).unwrap());
    s.cycle_id().unwrap();
    let Cookie::Set(new_id) = finish(&s) else {
        panic!("a new id")
    };
    let s = h.post(Some(&new_id));
    assert!(!s.verify_csrf_token(before.as_str()).unwrap());
    assert_ne!(s.csrf_token().unwrap(), before);
    finish(&s);
    drop(h);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn invalidate_drops_the_token() {
    let h = Harness::new();
    let s = h.post(None);
    let before = s.csrf_token().unwrap();
    s.invalidate().unwrap();
    assert!(!s.verify_csrf_token(before.as_str()).unwrap());
    assert_ne!(s.csrf_token().unwrap(), before);
}

#[test]
fn a_token_is_never_printed_by_debug() {
    let h = Harness::new();
    let s = h.post(None);
    let token = s.csrf_token().unwrap();
    let debug = format!("{token:?} {s:?}");
    assert!(!debug.contains(token.as_str()), "{debug}");
}

// --- the layer ---

/// Pages behind the CSRF layer (`/token` hands out the token, `/save`
/// counts its calls), and `/api` outside it.
fn app(h: &Harness, calls: &Arc<AtomicU32>, max_body: usize) -> Router {
    let saves = Arc::clone(calls);
    let api_calls = Arc::clone(calls);
    let pages = Router::new()
        .route(
            "/token",
            get(|s: Session| async move { s.csrf_token().map(|t| t.to_string()) }),
        )
        .route(
            "/page",
            get(|| async { "page" })
                .head(|| async { "" })
                .options(|| async { "" }),
        )
        .route(
            "/save",
            post(move |s: Session, body: String| {
                let saves = Arc::clone(&saves);
                async move {
                    saves.fetch_add(1, Ordering::SeqCst);
                    s.pkg("my.app")?.insert("saved", true)?;
                    Ok::<_, SessionError>(body)
                }
            })
            .put(|| async { "put" })
            .patch(|| async { "patch" })
            .delete(|| async { "delete" }),
        )
        .route_layer(CsrfLayer::new().with_max_body_bytes(max_body));
    Router::new()
        .merge(pages)
        .route(
            "/api",
            post(move |s: Session| {
                let api_calls = Arc::clone(&api_calls);
                async move {
                    api_calls.fetch_add(1, Ordering::SeqCst);
                    s.pkg("my.app")?.insert("api", true)?;
                    Ok::<_, SessionError>("api")
                }
            }),
        )
        .layer(SessionLayer::new(h.manager.clone()))
}

struct Answer {
    status: StatusCode,
    cookie: Option<String>,
    content_type: Option<String>,
    body: String,
}

impl Answer {
    fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {:?}", self.body))
    }
}

async fn call(
    app: &Router,
    method: &str,
    uri: &str,
    cookie: Option<&str>,
    headers: &[(&str, &str)],
    body: &str,
) -> Answer {
    let mut request = Request::builder().method(method).uri(uri);
    if let Some(id) = cookie {
        request = request.header(header::COOKIE, format!("{}={id}", common::COOKIE));
    }
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = app
        .clone()
        .oneshot(request.body(Body::from(body.to_owned())).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let cookie = response.headers().get(header::SET_COOKIE).map(|v| {
        let parsed = cookie::Cookie::parse(v.to_str().unwrap().to_owned()).unwrap();
        parsed.value().to_owned()
    });
    let content_type = response
        .headers()
        .get(header::CONTENT_TYPE)
        .map(|v| v.to_str().unwrap().to_owned());
    let body = response.into_body().collect().await.unwrap().to_bytes();
    Answer {
        status,
        cookie,
        content_type,
        body: String::from_utf8(body.to_vec()).unwrap(),
    }
}

/// A client with a session and its token.
async fn client_with_token(app: &Router) -> (String, String) {
    let answer = call(app, "GET", "/token", None, &[], "").await;
    assert_eq!(answer.status, StatusCode::OK);
    (
        answer.cookie.expect("the token created the session"),
        answer.body,
    )
}

const FORM: (&str, &str) = ("content-type", "application/x-www-form-urlencoded");

fn assert_refused(answer: &Answer) {
    assert_eq!(answer.status, StatusCode::FORBIDDEN, "{}", answer.body);
    assert_eq!(answer.content_type.as_deref(), Some("application/json"));
    let json = answer.json();
    assert_eq!(json["code"], "csrf_token_mismatch");
    let message = json["error"].as_str().unwrap();
    assert!(
        message.contains("CSRF token")
            && message.contains("reload the page")
            && message.contains("X-CSRF-Token"),
        "{message}"
    );
    assert_eq!(answer.cookie, None);
}

#[tokio::test]
async fn safe_methods_pass_without_a_token_and_create_no_session() {
    let h = Harness::new();
    let calls = Arc::new(AtomicU32::new(0));
    let app = app(&h, &calls, 1024);
    for method in ["GET", "HEAD", "OPTIONS"] {
        let answer = call(&app, method, "/page", None, &[], "").await;
        assert_eq!(answer.status, StatusCode::OK, "{method}");
        assert_eq!(answer.cookie, None, "{method}");
    }
    assert_eq!(h.container.stats().unwrap().sessions, 0);
}

#[tokio::test]
async fn unsafe_methods_without_a_token_are_refused_with_403_and_no_session() {
    let h = Harness::new();
    let calls = Arc::new(AtomicU32::new(0));
    let app = app(&h, &calls, 1024);
    for method in ["POST", "PUT", "PATCH", "DELETE"] {
        let answer = call(&app, method, "/save", None, &[], "").await;
        assert_refused(&answer);
        assert!(answer.json()["error"].as_str().unwrap().contains("missing"));
        let answer = call(
            &app,
            method,
            "/save",
            None,
            &[("x-csrf-token", "guess")],
            "",
        )
        .await;
        assert_refused(&answer);
    }
    assert_eq!(calls.load(Ordering::SeqCst), 0, "the handler never ran");
    assert_eq!(h.container.stats().unwrap().sessions, 0, "no session made");
}

#[tokio::test]
async fn a_missing_or_wrong_token_is_refused_for_a_client_with_a_session() {
    let h = Harness::new();
    let calls = Arc::new(AtomicU32::new(0));
    let app = app(&h, &calls, 1024);
    let (id, token) = client_with_token(&app).await;

    assert_refused(&call(&app, "POST", "/save", Some(&id), &[], "").await);
    let mut wrong = token.clone();
    wrong.replace_range(0..1, if token.starts_with('A') { "B" } else { "A" });
    let answer = call(
        &app,
        "POST",
        "/save",
        Some(&id),
        &[("X-CSRF-Token", &wrong)],
        "",
    )
    .await;
    assert_refused(&answer);
    assert!(
        answer.json()["error"]
            .as_str()
            .unwrap()
            .contains("does not match")
    );
    let answer = call(&app, "POST", "/save", Some(&id), &[FORM], "csrf_token=").await;
    assert_refused(&answer);
    assert_eq!(calls.load(Ordering::SeqCst), 0, "the handler never ran");
}

#[tokio::test]
async fn the_token_of_another_session_is_refused() {
    let h = Harness::new();
    let calls = Arc::new(AtomicU32::new(0));
    let app = app(&h, &calls, 1024);
    let (id, _) = client_with_token(&app).await;
    let (_, attacker_token) = client_with_token(&app).await;
    let answer = call(
        &app,
        "POST",
        "/save",
        Some(&id),
        &[("x-csrf-token", &attacker_token)],
        "",
    )
    .await;
    assert_refused(&answer);
    // Without a session cookie, no token is anyone's.
    let answer = call(
        &app,
        "POST",
        "/save",
        None,
        &[("x-csrf-token", &attacker_token)],
        "",
    )
    .await;
    assert_refused(&answer);
    assert_eq!(calls.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn the_header_token_is_accepted_for_every_unsafe_method() {
    let h = Harness::new();
    let calls = Arc::new(AtomicU32::new(0));
    let app = app(&h, &calls, 1024);
    let (id, token) = client_with_token(&app).await;
    for (method, expected) in [
        ("POST", "body"),
        ("PUT", "put"),
        ("PATCH", "patch"),
        ("DELETE", "delete"),
    ] {
        let answer = call(
            &app,
            method,
            "/save",
            Some(&id),
            &[("X-CSRF-Token", &token)],
            "body",
        )
        .await;
        assert_eq!(
            (answer.status, answer.body.as_str()),
            (StatusCode::OK, expected),
            "{method}"
        );
    }
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn the_form_field_is_accepted_and_the_body_reaches_the_handler_unchanged() {
    let h = Harness::new();
    let calls = Arc::new(AtomicU32::new(0));
    let app = app(&h, &calls, 1024);
    let (id, token) = client_with_token(&app).await;
    let body = format!("name=a+b%21&csrf_token={token}&z=1");
    let form = (
        "Content-Type",
        "application/x-www-form-urlencoded; charset=UTF-8",
    );
    let answer = call(&app, "POST", "/save", Some(&id), &[form], &body).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    assert_eq!(answer.body, body, "the handler got the body as sent");
    assert_eq!(calls.load(Ordering::SeqCst), 1);

    // The field in a body that is not a form is not looked at.
    let json = ("content-type", "application/json");
    let answer = call(&app, "POST", "/save", Some(&id), &[json], &body).await;
    assert_refused(&answer);
}

#[tokio::test]
async fn the_header_takes_precedence_over_the_form_field() {
    let h = Harness::new();
    let calls = Arc::new(AtomicU32::new(0));
    let app = app(&h, &calls, 1024);
    let (id, token) = client_with_token(&app).await;
    let body = format!("csrf_token={token}");
    let answer = call(
        &app,
        "POST",
        "/save",
        Some(&id),
        &[FORM, ("x-csrf-token", "wrong")],
        &body,
    )
    .await;
    assert_refused(&answer);
    // A right header spares the body, however large, from being read.
    let large = "x".repeat(4096);
    let answer = call(
        &app,
        "POST",
        "/save",
        Some(&id),
        &[FORM, ("x-csrf-token", &token)],
        &large,
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.body.len(), 4096);
}

#[tokio::test]
async fn a_form_over_the_limit_is_refused_with_413() {
    let h = Harness::new();
    let calls = Arc::new(AtomicU32::new(0));
    let app = app(&h, &calls, 64);
    let (id, token) = client_with_token(&app).await;
    let body = format!("csrf_token={token}&pad={}", "x".repeat(100));
    let answer = call(&app, "POST", "/save", Some(&id), &[FORM], &body).await;
    assert_eq!(answer.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(
        answer.json()["error"]
            .as_str()
            .unwrap()
            .contains("64 bytes")
    );
    assert_eq!(calls.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn routes_outside_the_layer_work_without_a_token() {
    let h = Harness::new();
    let calls = Arc::new(AtomicU32::new(0));
    let app = app(&h, &calls, 1024);
    let answer = call(&app, "POST", "/api", None, &[], "").await;
    assert_eq!(
        (answer.status, answer.body.as_str()),
        (StatusCode::OK, "api")
    );
    let id = answer.cookie.expect("the API created the session");
    let answer = call(&app, "POST", "/api", Some(&id), &[], "").await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn after_cycle_id_the_old_token_is_refused_and_the_new_one_accepted() {
    let h = Harness::new();
    let calls = Arc::new(AtomicU32::new(0));
    let login = Router::new()
        .route("/login", post(|s: Session| async move { s.cycle_id() }))
        .route_layer(CsrfLayer::new());
    let app = app(&h, &calls, 1024).merge(login.layer(SessionLayer::new(h.manager.clone())));
    let (id, token) = client_with_token(&app).await;
    let answer = call(
        &app,
        "POST",
        "/login",
        Some(&id),
        &[("x-csrf-token", &token)],
        "",
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    let new_id = answer.cookie.expect("a new id");

    let answer = call(
        &app,
        "POST",
        "/save",
        Some(&new_id),
        &[("x-csrf-token", &token)],
        "",
    )
    .await;
    assert_refused(&answer);
    let fresh = call(&app, "GET", "/token", Some(&new_id), &[], "")
        .await
        .body;
    assert_ne!(fresh, token);
    let answer = call(
        &app,
        "POST",
        "/save",
        Some(&new_id),
        &[("x-csrf-token", &fresh)],
        "",
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK);
}

#[tokio::test]
async fn the_layer_without_a_session_layer_answers_500() {
    let app = Router::new()
        .route("/save", post(|| async { "saved" }))
        .route_layer(CsrfLayer::new());
    let answer = call(&app, "POST", "/save", None, &[("x-csrf-token", "x")], "").await;
    assert_eq!(answer.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert!(
        answer.json()["error"]
            .as_str()
            .unwrap()
            .contains("SessionLayer")
    );
    let answer = call(&app, "GET", "/save", None, &[], "").await;
    assert_eq!(
        answer.status,
        StatusCode::METHOD_NOT_ALLOWED,
        "GET passes to the router"
    );
}
