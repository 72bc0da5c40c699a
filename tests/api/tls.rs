//! The server over TLS (HTTP/1.1 and HTTP/2 by ALPN): a certificate made at
//! test time, raw TLS connections with a chosen receive buffer, and an
//! HTTP/2 client whose window can be 0.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use serde_json::{json, Value};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpSocket, TcpStream};
use tokio_rustls::client::TlsStream;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
use tokio_rustls::rustls::{ClientConfig, RootCertStore};

use crate::helpers::*;

/// A server serving HTTPS with a fresh self-signed certificate.
pub struct TlsApp {
    pub app: TestApp,
    dir: PathBuf,
    cert: CertificateDer<'static>,
}

impl Drop for TlsApp {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl std::ops::Deref for TlsApp {
    type Target = TestApp;
    fn deref(&self) -> &TestApp {
        &self.app
    }
}

/// Starts the server with TLS (and a random HS256 secret) plus `envs`.
pub async fn spawn_tls_app(envs: &[(&str, &str)]) -> TlsApp {
    let dir = std::env::temp_dir().join(format!("campusbite-tls-{}", random_hex(12)));
    std::fs::create_dir_all(&dir).unwrap();
    let key = rcgen::generate_simple_self_signed(vec!["127.0.0.1".into(), "localhost".into()])
        .expect("self-signed certificate");
    let cert_file = dir.join("cert.pem");
    let key_file = dir.join("key.pem");
    std::fs::write(&cert_file, key.cert.pem()).unwrap();
    std::fs::write(&key_file, key.signing_key.serialize_pem()).unwrap();
    let (cert_file, key_file) = (cert_file.to_str().unwrap(), key_file.to_str().unwrap());
    let mut all = vec![
        ("NOTIFY_TLS_CERT_FILE", cert_file),
        ("NOTIFY_TLS_KEY_FILE", key_file),
    ];
    all.extend_from_slice(envs);
    let app = spawn_app_with(&all).await;
    TlsApp {
        app,
        dir,
        cert: key.cert.der().clone(),
    }
}

/// An HTTP/2 connection: its request handle and its ping handle.
pub struct H2 {
    pub send: h2::client::SendRequest<Bytes>,
    pub ping: h2::PingPong,
    /// `SETTINGS_MAX_CONCURRENT_STREAMS` as the server announced it.
    pub max_streams: Arc<std::sync::atomic::AtomicUsize>,
    /// The task driving the connection: it ends when the connection does.
    pub driver: tokio::task::JoinHandle<Result<(), h2::Error>>,
}

/// An HTTP/2 connection over `io` whose streams start with a receive window
/// of `window` bytes, and the connection with `connection_window` bytes
/// (the protocol's 65,535 when `None`).
pub async fn h2_handshake<T>(io: T, window: u32, connection_window: Option<u32>) -> H2
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let mut builder = h2::client::Builder::new();
    builder.initial_window_size(window);
    if let Some(size) = connection_window {
        builder.initial_connection_window_size(size);
    }
    let (send, mut connection) = builder
        .handshake::<_, Bytes>(io)
        .await
        .expect("h2 handshake");
    let ping = connection.ping_pong().expect("ping handle");
    let max_streams = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let seen = max_streams.clone();
    let driver = tokio::spawn(async move {
        let mut connection = std::pin::pin!(connection);
        std::future::poll_fn(|cx| {
            let polled = std::future::Future::poll(connection.as_mut(), cx);
            seen.store(
                connection.max_concurrent_send_streams(),
                std::sync::atomic::Ordering::Relaxed,
            );
            polled
        })
        .await
    });
    let mut h2 = H2 {
        send,
        ping,
        max_streams,
        driver,
    };
    // The server's SETTINGS have been read once the first ping returns.
    h2.sync().await;
    h2
}

impl H2 {
    /// Opens a request (without a body unless `open` keeps the request
    /// stream open); the response head is the future's.
    pub async fn request(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        open: bool,
    ) -> (h2::client::ResponseFuture, h2::SendStream<Bytes>) {
        let mut req = http::Request::builder()
            .method(method)
            .uri(format!("https://127.0.0.1{path}"));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let mut send = self
            .send
            .clone()
            .ready()
            .await
            .expect("h2 connection ready");
        send.send_request(req.body(()).unwrap(), !open)
            .expect("send h2 request")
    }

    /// Round trip: every frame sent before it has been read by the server.
    pub async fn sync(&mut self) {
        self.ping
            .ping(h2::Ping::opaque())
            .await
            .expect("h2 ping answered");
    }
}

impl TlsApp {
    /// A TLS connection offering `alpn`, with a receive buffer of
    /// `recv_buffer` bytes when given (a client that will not read).
    pub async fn tls_connect(&self, alpn: &[u8], recv_buffer: Option<u32>) -> TlsStream<TcpStream> {
        let socket = TcpSocket::new_v4().unwrap();
        if let Some(size) = recv_buffer {
            socket.set_recv_buffer_size(size).unwrap();
        }
        let tcp = socket
            .connect(format!("127.0.0.1:{}", self.port).parse().unwrap())
            .await
            .expect("connect");
        let mut roots = RootCertStore::empty();
        roots.add(self.cert.clone()).unwrap();
        let mut config = ClientConfig::builder_with_provider(Arc::new(
            tokio_rustls::rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
        config.alpn_protocols = vec![alpn.to_vec()];
        let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
        let tls = connector
            .connect(ServerName::try_from("127.0.0.1").unwrap(), tcp)
            .await
            .expect("TLS handshake");
        assert_eq!(tls.get_ref().1.alpn_protocol(), Some(alpn), "ALPN");
        tls
    }

    /// An HTTP/2 connection whose streams start with a receive window of
    /// `window` bytes (0: the server can send no data at all).
    pub async fn h2(&self, window: u32) -> H2 {
        let tls = self.tls_connect(b"h2", None).await;
        h2_handshake(tls, window, None).await
    }

    /// A subscribe stream for `user` over HTTP/2, with its response head.
    pub async fn h2_subscribe(
        &self,
        h2: &mut H2,
        token: &str,
    ) -> Result<http::Response<h2::RecvStream>, h2::Error> {
        h2.request("GET", &format!("{SUBSCRIBE}?token={token}"), &[], false)
            .await
            .0
            .await
    }

    /// `method path` over a fresh HTTP/2 connection; status and body.
    pub async fn https(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&str>,
    ) -> (u16, String) {
        let mut h2 = self.h2(65_535).await;
        https_on(&mut h2, method, path, headers, body).await
    }

    /// Publishes `notification` to `user` over `h2`; asserts 202.
    pub async fn publish_on(&self, h2: &mut H2, user: &str, notification: &Value) {
        let body = json!({"userId": user, "notification": notification}).to_string();
        let auth = format!("Bearer {}", self.publisher_token());
        let (status, text) = https_on(
            h2,
            "POST",
            PUBLISH,
            &[
                ("authorization", auth.as_str()),
                ("content-type", "application/json"),
            ],
            Some(&body),
        )
        .await;
        assert_eq!(status, 202, "publish to {user}: {text}");
    }

    /// The `/metrics` page over HTTPS.
    pub async fn metrics_tls(&self) -> Metrics {
        let (status, text) = self.https("GET", "/metrics", &[], None).await;
        assert_eq!(status, 200);
        Metrics::parse(&text)
    }

    /// Polls `/metrics` until `pred` holds for the series `name`.
    pub async fn wait_metric_tls(&self, name: &str, pred: impl Fn(f64) -> bool) -> f64 {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let last = self.metrics_tls().await.value(name, &[]);
            if let Some(v) = last.filter(|v| pred(*v)) {
                return v;
            }
            if Instant::now() > deadline {
                panic!("metric {name} never matched; last value {last:?}");
            }
            tokio::time::sleep(std::time::Duration::from_millis(25)).await;
        }
    }

    /// Opens an HTTP/1.1 subscribe stream over TLS whose client never reads.
    pub async fn stopped_h1_reader(&self, user: &str) -> TlsStream<TcpStream> {
        self.stopped_h1_reader_with(&self.user_token(user)).await
    }

    /// The same with `token`.
    pub async fn stopped_h1_reader_with(&self, token: &str) -> TlsStream<TcpStream> {
        let mut tls = self.tls_connect(b"http/1.1", Some(4096)).await;
        let request = format!(
            "GET {SUBSCRIBE}?token={token} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nAccept: text/event-stream\r\n\r\n",
            self.port
        );
        tls.write_all(request.as_bytes()).await.unwrap();
        tls.flush().await.unwrap();
        tls
    }
}

/// `method path` over `h2`; status and body.
pub async fn https_on(
    h2: &mut H2,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> (u16, String) {
    let (response, mut stream) = h2.request(method, path, headers, body.is_some()).await;
    if let Some(body) = body {
        stream
            .send_data(Bytes::from(body.to_string()), true)
            .unwrap();
    }
    let response = response.await.expect("h2 response");
    let status = response.status().as_u16();
    let mut body = response.into_body();
    let mut text = Vec::new();
    while let Some(chunk) = body.data().await {
        let chunk = chunk.expect("h2 body");
        let _ = body.flow_control().release_capacity(chunk.len());
        text.extend_from_slice(&chunk);
    }
    (status, String::from_utf8_lossy(&text).into_owned())
}
