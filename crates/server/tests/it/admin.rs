//! The admin API through the real router: off without a token, its own authentication (a
//! client key is not an admin token), budgets that take effect at once, usage reports from the
//! records, and refusals that name the problem in our own error shape.

use std::time::Duration;

use serde_json::{Value, json};
use sluice_providers::ProviderKind;
use sluice_testkit::MockUpstream;

use crate::support::{KEY_ORG, KEY_TEAM, TestGateway, on};

const TOKEN: &str = "admin-token-for-the-tests-0123456789";

fn chat(text: &str) -> Value {
    json!({"model": "m", "max_tokens": 50, "messages": [{"role": "user", "content": text}]})
}

async fn admin_gateway(mock: &MockUpstream) -> TestGateway {
    TestGateway::builder()
        .route("m", [on(mock, ProviderKind::OpenAi, "gpt-4o-mini")])
        .admin_token(TOKEN)
        .start()
        .await
}

/// An admin request with `token` (none: no `Authorization` header).
fn admin(
    gw: &TestGateway,
    method: reqwest::Method,
    path: &str,
    token: Option<&str>,
) -> reqwest::RequestBuilder {
    let request = gw.client.request(method, gw.url(path));
    match token {
        Some(token) => request.bearer_auth(token),
        None => request,
    }
}

async fn error_of(res: reqwest::Response) -> (u16, String, String) {
    let status = res.status().as_u16();
    let body: Value = res.json().await.unwrap();
    (
        status,
        body["error"]["code"].as_str().unwrap().to_owned(),
        body["error"]["message"].as_str().unwrap().to_owned(),
    )
}

#[tokio::test]
async fn every_admin_route_is_not_found_while_the_admin_api_is_off() {
    let mock = MockUpstream::openai().start().await;
    let gw = TestGateway::builder()
        .route("m", [on(&mock, ProviderKind::OpenAi, "gpt-4o-mini")])
        .start()
        .await;
    for path in [
        "/admin/v1/budgets",
        "/admin/v1/usage",
        "/admin/v1/elsewhere",
    ] {
        let res = admin(&gw, reqwest::Method::GET, path, Some(TOKEN))
            .send()
            .await
            .unwrap();
        let (status, code, message) = error_of(res).await;
        assert_eq!(
            (status, code.as_str()),
            (404, "admin_api_disabled"),
            "{path}"
        );
        assert!(message.contains("[admin] token_env"), "{message}");
    }
    gw.finish().await;
}

#[tokio::test]
async fn admin_routes_refuse_a_missing_or_wrong_token_and_client_keys() {
    let mock = MockUpstream::openai().start().await;
    let gw = admin_gateway(&mock).await;
    let client_key = gw.key.clone();
    for token in [None, Some("wrong-token"), Some(client_key.as_str())] {
        let res = admin(&gw, reqwest::Method::GET, "/admin/v1/budgets", token)
            .send()
            .await
            .unwrap();
        let (status, code, _) = error_of(res).await;
        assert_eq!(
            (status, code.as_str()),
            (401, "invalid_admin_token"),
            "{token:?}"
        );
    }
    // The admin token is no client key either.
    let res = gw
        .client
        .post(gw.url("/v1/chat/completions"))
        .bearer_auth(TOKEN)
        .json(&chat("hi"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);

    let res = admin(&gw, reqwest::Method::GET, "/admin/v1/budgets", Some(TOKEN))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.json::<Value>().await.unwrap(), json!([]));
    let res = admin(&gw, reqwest::Method::GET, "/admin/v1/nothing", Some(TOKEN))
        .send()
        .await
        .unwrap();
    let (status, _, message) = error_of(res).await;
    assert_eq!(status, 404);
    assert!(message.contains("GET /admin/v1/nothing"), "{message}");
    let res = admin(&gw, reqwest::Method::POST, "/admin/v1/usage", Some(TOKEN))
        .send()
        .await
        .unwrap();
    let (status, code, message) = error_of(res).await;
    assert_eq!((status, code.as_str()), (405, "method_not_allowed"));
    assert!(
        message.contains("POST is not allowed on /admin/v1/usage"),
        "{message}"
    );
    assert_eq!(mock.hits(), 0);
    gw.finish().await;
}

#[tokio::test]
async fn an_end_user_row_names_one_tenants_user_or_that_id_in_every_tenant() {
    let mock = MockUpstream::openai().start().await;
    let gw = admin_gateway(&mock).await;
    let put = |scope: &str, amount: u64| {
        admin(&gw, reqwest::Method::PUT, "/admin/v1/budgets", Some(TOKEN))
            .json(&json!({"scope": scope, "metric": "requests", "period": "day", "amount": amount}))
            .send()
    };
    // Bob of the key's tenant, and bob of every tenant.
    let res = put(&format!("user:{KEY_ORG}/bob"), 2).await.unwrap();
    assert_eq!(res.status(), 200);
    let stored: Value = res.json().await.unwrap();
    assert_eq!(stored["scope"], format!("user:{KEY_ORG}/bob"));
    assert_eq!(put("user:bob", 10).await.unwrap().status(), 200);
    // A tenant's `*` is not a row: the message says what to write.
    let res = put(&format!("user:{KEY_ORG}/*"), 1).await.unwrap();
    assert_eq!(res.status(), 400);
    let body: Value = res.json().await.unwrap();
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("user:TENANT/USER"), "{message}");

    let mut request = chat("hi");
    request["user"] = json!("bob");
    let ok = gw.openai("/v1/chat/completions", request).await;
    assert_eq!(ok.status(), 200);
    // The tenant's own row is the one in force.
    assert_eq!(ok.headers()["x-ratelimit-limit-requests"], "2");

    let res = admin(&gw, reqwest::Method::GET, "/admin/v1/budgets", Some(TOKEN))
        .send()
        .await
        .unwrap();
    let budgets: Value = res.json().await.unwrap();
    let used = |scope: &str| {
        budgets
            .as_array()
            .unwrap()
            .iter()
            .find(|b| b["scope"] == scope)
            .map(|b| b["used"].clone())
            .unwrap()
    };
    assert_eq!(used(&format!("user:{KEY_ORG}/bob")), json!(1));
    // One counter per tenant's bob: no single usage to show.
    assert_eq!(used("user:bob"), Value::Null);
}

#[tokio::test]
async fn a_budget_put_through_the_admin_api_applies_at_once_and_its_deletion_lifts_it() {
    let mock = MockUpstream::openai().start().await;
    let gw = admin_gateway(&mock).await;
    let scope = format!("team:{KEY_TEAM}");

    let res = admin(&gw, reqwest::Method::PUT, "/admin/v1/budgets", Some(TOKEN))
        .json(&json!({"scope": scope, "metric": "requests", "period": "day", "amount": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let stored: Value = res.json().await.unwrap();
    assert_eq!(
        (&stored["scope"], &stored["metric"], &stored["amount"]),
        (&json!("team:qa"), &json!("requests"), &json!(1))
    );

    // No wait for the periodic reload: the limit is in force for the very next request.
    let first = gw.openai("/v1/chat/completions", chat("one")).await;
    assert_eq!(first.status(), 200);
    assert_eq!(first.headers()["x-ratelimit-limit-requests"], "1");
    let refused = gw.openai("/v1/chat/completions", chat("two")).await;
    assert_eq!(refused.status(), 429);
    assert_eq!(mock.hits(), 1);

    let res = admin(&gw, reqwest::Method::GET, "/admin/v1/budgets", Some(TOKEN))
        .send()
        .await
        .unwrap();
    let budgets: Value = res.json().await.unwrap();
    assert_eq!(budgets.as_array().unwrap().len(), 1);
    assert_eq!(budgets[0]["scope"], "team:qa");
    assert_eq!(budgets[0]["period"], "day");
    assert_eq!(
        budgets[0]["used"], 1,
        "the refused request reserved nothing"
    );

    let res = admin(
        &gw,
        reqwest::Method::DELETE,
        "/admin/v1/budgets?scope=team:qa&metric=requests&period=day",
        Some(TOKEN),
    )
    .send()
    .await
    .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.json::<Value>().await.unwrap(), json!({"deleted": 1}));
    let lifted = gw.openai("/v1/chat/completions", chat("three")).await;
    assert_eq!(lifted.status(), 200);
    assert!(lifted.headers().get("x-ratelimit-limit-requests").is_none());

    let res = admin(
        &gw,
        reqwest::Method::DELETE,
        "/admin/v1/budgets?scope=team:qa",
        Some(TOKEN),
    )
    .send()
    .await
    .unwrap();
    let (status, code, _) = error_of(res).await;
    assert_eq!((status, code.as_str()), (404, "budget_not_found"));
    gw.finish().await;
}

#[tokio::test]
async fn a_bad_budget_row_is_refused_with_a_400_naming_the_problem() {
    let mock = MockUpstream::openai().start().await;
    let gw = admin_gateway(&mock).await;
    let put = |body: Value| {
        admin(&gw, reqwest::Method::PUT, "/admin/v1/budgets", Some(TOKEN))
            .json(&body)
            .send()
    };
    let cases = [
        (
            json!({"scope": "team:qa", "metric": "usd", "period": "fortnight", "amount": 5}),
            "`fortnight` is not a period",
        ),
        (
            json!({"scope": "galaxy:far", "metric": "usd", "period": "day", "amount": 5}),
            "galaxy",
        ),
        (
            json!({"scope": "team:qa", "metric": "usd", "period": "day", "amount": 5, "soft_amount": 9}),
            "the soft limit is above the hard limit",
        ),
        (
            json!({"scope": "team:qa", "metric": "usd", "period": "day", "amount": -5}),
            "not a budget row",
        ),
        (json!({"scope": "team:qa"}), "missing field `metric`"),
    ];
    for (body, expected) in cases {
        let (status, code, message) = error_of(put(body.clone()).await.unwrap()).await;
        assert_eq!((status, code.as_str()), (400, "invalid_request"), "{body}");
        assert!(message.contains(expected), "{body}: {message}");
    }
    // An allocation larger than what its parent has left.
    let res =
        put(json!({"scope": "org:acme", "metric": "usd", "period": "month", "amount": 1_000_000}))
            .await
            .unwrap();
    assert_eq!(res.status(), 200);
    let (status, _, message) = error_of(
        put(
            json!({"scope": "team:qa", "metric": "usd", "period": "month",
                   "amount": 2_000_000, "parent": "org:acme"}),
        )
        .await
        .unwrap(),
    )
    .await;
    assert_eq!(status, 400);
    assert!(message.contains("allocates"), "{message}");

    let res = admin(
        &gw,
        reqwest::Method::DELETE,
        "/admin/v1/budgets",
        Some(TOKEN),
    )
    .send()
    .await
    .unwrap();
    assert_eq!(error_of(res).await.0, 400);
    let res = admin(
        &gw,
        reqwest::Method::GET,
        "/admin/v1/usage?by=galaxy",
        Some(TOKEN),
    )
    .send()
    .await
    .unwrap();
    let (status, _, message) = error_of(res).await;
    assert_eq!(status, 400);
    assert!(message.contains("`galaxy`"), "{message}");
    assert_eq!(mock.hits(), 0);
    gw.finish().await;
}

#[tokio::test]
async fn usage_groups_the_requests_by_team_and_feature_with_their_cost() {
    let mock = MockUpstream::openai().start().await;
    let gw = admin_gateway(&mock).await;
    for (i, feature) in ["search", "search", "summarise"].into_iter().enumerate() {
        let res = gw
            .client
            .post(gw.url("/v1/chat/completions"))
            .bearer_auth(&gw.key)
            .header("x-sluice-feature", feature)
            .json(&chat(&format!("question {i}")))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
    }

    // Records are written a few milliseconds after each request ends (group commit): ask
    // until all three are in.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    let rows = loop {
        let res = admin(
            &gw,
            reqwest::Method::GET,
            "/admin/v1/usage?by=team&by=feature",
            Some(TOKEN),
        )
        .send()
        .await
        .unwrap();
        assert_eq!(res.status(), 200);
        let rows: Vec<Value> = res.json().await.unwrap();
        let requests: u64 = rows.iter().map(|r| r["requests"].as_u64().unwrap()).sum();
        if requests == 3 || tokio::time::Instant::now() > deadline {
            break rows;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(rows.len(), 2, "{rows:?}");
    let search = rows.iter().find(|r| r["feature"] == "search").unwrap();
    assert_eq!(search["team"], KEY_TEAM);
    assert_eq!(
        (&search["requests"], &search["errors"]),
        (&json!(2), &json!(0))
    );
    assert!(search["cost_micros"].as_i64().unwrap() > 0, "{search}");
    assert!(search["input_tokens"].as_u64().unwrap() > 0, "{search}");
    assert!(search["energy_uwh"].as_u64().unwrap() > 0, "{search}");
    assert!(search["kwh_per_1k_requests"].as_f64().unwrap() > 0.0);

    // A span that ended before the requests holds none of them.
    let res = admin(
        &gw,
        reqwest::Method::GET,
        "/admin/v1/usage?since=0&until=1000",
        Some(TOKEN),
    )
    .send()
    .await
    .unwrap();
    assert_eq!(res.json::<Value>().await.unwrap(), json!([]));
    gw.finish().await;
}
