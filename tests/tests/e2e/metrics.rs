//! The admin port's Prometheus metrics count each request under its route pattern, method and
//! status, and an invented method cannot add series.

use cocon_tests::Cocon;
use reqwest::Method;
use serde_json::json;

/// The value of the `cocon_http_requests_total` series whose labels include all of `labels`.
fn requests_total(metrics: &str, labels: &[&str]) -> Option<f64> {
    metrics
        .lines()
        .filter(|l| l.starts_with("cocon_http_requests_total{"))
        .find(|l| labels.iter().all(|label| l.contains(label)))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[tokio::test]
async fn test_http_metrics_count_requests_per_route_and_bound_methods() {
    let dir = tempfile::tempdir().unwrap();
    let cocon = Cocon::builder(dir.path()).start().await.unwrap();
    let api = cocon.instance("alice.test", "io.cozy.notes").await.unwrap();
    for i in 0..3 {
        let put = api.put(&format!("/data/io.cozy.notes/n{i}"), &json!({"i": i})).await;
        assert_eq!(put.status, 200, "{}", put.text);
    }
    for i in 0..2 {
        assert_eq!(api.get(&format!("/data/io.cozy.notes/n{i}")).await.status, 200);
    }
    assert_eq!(api.get("/data/io.cozy.notes/missing").await.status, 404);
    // WebDAV takes any method (its own extensions among them); these two are nobody's.
    for verb in ["BREW", "WHEN"] {
        let brew = api
            .send(Method::from_bytes(verb.as_bytes()).unwrap(), "/dav/files/", None)
            .await;
        assert!(brew.status >= 400, "{} {}", brew.status, brew.text);
    }

    let (_, metrics) = cocon.admin(Method::GET, "/metrics", &[]).await.unwrap();
    let text = metrics.as_str().unwrap_or_default();
    let doc = r#"route="/data/{doctype}/{id}""#;
    assert_eq!(
        requests_total(text, &[doc, r#"method="PUT""#, r#"status="200""#]),
        Some(3.0),
        "{text}"
    );
    assert_eq!(
        requests_total(text, &[doc, r#"method="GET""#, r#"status="200""#]),
        Some(2.0)
    );
    assert_eq!(
        requests_total(text, &[doc, r#"method="GET""#, r#"status="404""#]),
        Some(1.0)
    );
    let other: f64 = text
        .lines()
        .filter(|l| l.starts_with("cocon_http_requests_total{") && l.contains(r#"method="other""#))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert_eq!(other, 2.0, "invented methods share one label: {text}");
    assert!(!text.contains("BREW") && !text.contains("WHEN"), "{text}");
}
