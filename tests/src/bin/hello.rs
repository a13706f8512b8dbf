//! The machine's HTTP ceiling for the benchmarks: a bare axum hello world, on the same runtime
//! settings as cocon. Usage: `hello 127.0.0.1:9999`.

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let addr = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:9999".into());
    let app = axum::Router::new().route("/", axum::routing::get(|| async { "hello" }));
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    println!("hello ready http={}", listener.local_addr()?);
    // TCP_NODELAY, as cocon's listeners.
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
        let _ = tcp.set_nodelay(true);
    });
    axum::serve(listener, app).await?;
    Ok(())
}
