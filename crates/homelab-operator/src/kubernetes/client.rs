//! The Kubernetes client: kube's request stack (base URL, retries of server errors,
//! authentication, extra headers) over a connection that speaks HTTP/2 when the apiserver offers
//! it, as client-go does. Every request and watch is then a stream on one TLS connection, instead
//! of each request in flight holding a pooled HTTP/1.1 connection with its own TLS session and
//! buffers: a burst of applies opens no new connections, and memory does not grow with it.
//! The watches hold one stream each for good (one per watched kind, at most sixteen), well
//! below the streams kube-apiserver allows per connection (`--http2-max-streams-per-connection`,
//! 100 when unset); a request beyond that limit waits for a stream instead of failing.

use std::time::Duration;

use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use kube::client::ConfigExt;
use kube::client::retry::RetryPolicy;
use kube::{Client, Config};
use tower::retry::RetryLayer;
use tower::{BoxError, ServiceBuilder};

/// A connection without frames for this long is pinged (client-go's `ReadIdleTimeout`)...
const PING_AFTER: Duration = Duration::from_secs(30);
/// ...and dropped when the ping is not answered in time (client-go's `PingTimeout`), so that
/// a connection the network silently lost fails every watch on it instead of leaving them
/// waiting forever.
const PING_TIMEOUT: Duration = Duration::from_secs(15);

/// Builds the client for `config`. A proxy or a TLS server name override is left to kube's own
/// stack, which handles both (over HTTP/1.1).
pub fn build(config: Config) -> Result<Client, kube::Error> {
    if config.proxy_url.is_some() || config.tls_server_name.is_some() {
        return Client::try_from(config);
    }
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_connect_timeout(config.connect_timeout);
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(config.rustls_client_config()?)
        .https_or_http()
        .enable_http1()
        .enable_http2()
        .wrap_connector(http);
    let transport = hyper_util::client::legacy::Builder::new(TokioExecutor::new())
        .timer(TokioTimer::new())
        .pool_timer(TokioTimer::new())
        .http2_keep_alive_interval(PING_AFTER)
        .http2_keep_alive_timeout(PING_TIMEOUT)
        .http2_keep_alive_while_idle(true)
        .build(https);
    let service = ServiceBuilder::new()
        .layer(config.base_uri_layer())
        .option_layer(
            config
                .default_retry
                .then(|| RetryLayer::new(RetryPolicy::server_retry())),
        )
        .option_layer(config.auth_layer()?)
        .layer(config.extra_headers_layer()?)
        .map_err(BoxError::from)
        .service(transport);
    Ok(Client::new(service, config.default_namespace))
}
