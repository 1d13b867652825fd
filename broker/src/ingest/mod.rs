//! Publishing over HTTP, for phones and services that cannot hold an MQTT connection.
//!
//! `POST /topics/{topic}?qos=0|1&retain=true|false` takes the body as the payload, as AWS
//! IoT Core's HTTPS endpoint does; `POST /pub` takes an OwnTracks app in HTTP mode, as its
//! Recorder does. A request passes what a PUBLISH passes, in the same order: who it is
//! (HTTP Basic with an account of the credentials file, the same failed-login limits; no
//! credentials file: anyone, which `serve` allows only on loopback), the topic name, the
//! account's policy, the location rules, and the publish quotas (per client id, and over
//! all publishers). Then it goes to the router through one shared link (`link.rs`).
//!
//! On HTTPS with `[tls] client_ca`, a device may instead present its client certificate:
//! without Basic credentials, the certificate's common name is its account, as for MQTT
//! over TLS.
//!
//! Answers: 200 `{"message":"OK"}` once the router has the message (QoS 1: acked it); 400
//! for a topic or location the gateway would refuse; 401 without valid credentials; 403 for
//! a topic the policy does not grant or a client id the account may not use; 413 over
//! `max_packet_size`; 429 over a quota or in login back-off (with `Retry-After`); 503 when
//! the link's queue is full.

mod link;
mod rates;

pub use link::{LinkError, Publisher};

use crate::auth::Denial;
use crate::auth::Refused;
use crate::gateway::frame::{self, TopicError};
use crate::gateway::Gateway;
use crate::guard::Hold;
use crate::http::ClientCertificate;
use axum::extract::{ConnectInfo, DefaultBodyLimit, Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Extension, Json, Router};
use bytes::Bytes;
use fleetcast_proto::location;
use fleetcast_proto::time::now_ms;
use serde::Deserialize;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// What the HTTP publishing routes share.
#[derive(Debug, Clone)]
pub struct Ingest {
    gateway: Arc<Gateway>,
    publisher: Publisher,
    rates: Arc<rates::Rates>,
}

impl Ingest {
    /// Publishing for `gateway`, through `publisher`.
    pub fn new(gateway: Arc<Gateway>, publisher: Publisher) -> Ingest {
        let rates = Arc::new(rates::Rates::new(
            gateway.config.limits.publish_rate_per_connection,
        ));
        Ingest {
            gateway,
            publisher,
            rates,
        }
    }
}

/// The routes: `POST /topics/{topic}` and `POST /pub`, bodies up to `max_packet_size`.
pub fn routes(ingest: Ingest) -> Router {
    let limit = ingest.gateway.config.limits.max_packet_size;
    Router::new()
        .route("/topics/*topic", post(topics))
        .route("/pub", post(owntracks))
        .layer(DefaultBodyLimit::max(limit))
        .with_state(ingest)
}

/// A refused request: its status and why.
#[derive(Debug)]
pub struct Refusal {
    status: StatusCode,
    why: String,
    retry_after: Option<Duration>,
}

impl Refusal {
    fn new(status: StatusCode, why: impl Into<String>) -> Refusal {
        Refusal {
            status,
            why: why.into(),
            retry_after: None,
        }
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let body = Json(serde_json::json!({ "message": self.why }));
        let mut r = (self.status, body).into_response();
        if let Some(wait) = self.retry_after {
            let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
            if let Ok(v) = HeaderValue::from_str(&secs.max(1).to_string()) {
                r.headers_mut().insert(header::RETRY_AFTER, v);
            }
        }
        if self.status == StatusCode::UNAUTHORIZED {
            let realm = HeaderValue::from_static("Basic realm=\"fleetcast\"");
            r.headers_mut().insert(header::WWW_AUTHENTICATE, realm);
        }
        r
    }
}

/// `?qos=&retain=&client_id=`.
#[derive(Debug, Deserialize)]
struct TopicQuery {
    #[serde(default)]
    qos: u8,
    #[serde(default)]
    retain: bool,
    /// The client id the policy's `${clientid}` stands for; the username by default.
    client_id: Option<String>,
}

async fn topics(
    State(ingest): State<Ingest>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    cert: Option<Extension<ClientCertificate>>,
    Path(topic): Path<String>,
    Query(q): Query<TopicQuery>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<serde_json::Value>, Refusal> {
    if q.qos > 1 {
        return Err(Refusal::new(StatusCode::BAD_REQUEST, "qos must be 0 or 1"));
    }
    let who = Caller::from_headers(&headers, q.client_id, cert)?;
    let done = ingest
        .publish(peer, &who, topic, body, q.retain, q.qos == 1)
        .await;
    ingest.count(done.as_ref().err())?;
    Ok(Json(serde_json::json!({ "message": "OK" })))
}

/// `?u=USER&d=DEVICE`, OwnTracks' alternative to its `X-Limit-U`/`X-Limit-D` headers.
#[derive(Debug, Deserialize)]
struct OwnTracksQuery {
    u: Option<String>,
    d: Option<String>,
}

async fn owntracks(
    State(ingest): State<Ingest>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    cert: Option<Extension<ClientCertificate>>,
    Query(q): Query<OwnTracksQuery>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<serde_json::Value>, Refusal> {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let (Some(user), Some(device)) = (header("x-limit-u").or(q.u), header("x-limit-d").or(q.d))
    else {
        let why = "the user and device are missing (X-Limit-U, X-Limit-D or ?u=&d=)";
        return Err(Refusal::new(StatusCode::BAD_REQUEST, why));
    };
    let who = Caller::from_headers(&headers, Some(device.clone()), cert)?;
    let topic = format!("owntracks/{user}/{device}");
    let done = ingest.publish(peer, &who, topic, body, true, false).await;
    ingest.count(done.as_ref().err())?;
    // The app expects an array (of messages for it: none).
    Ok(Json(serde_json::json!([])))
}

/// Who a request says it is.
#[derive(Debug)]
struct Caller {
    login: Option<(String, String)>,
    client_id: Option<String>,
    /// A verified client certificate's common name, used when there is no `login`.
    certificate: Option<String>,
}

impl Caller {
    /// HTTP Basic credentials, if any, the client id asked for, and the connection's
    /// client certificate.
    fn from_headers(
        headers: &HeaderMap,
        client_id: Option<String>,
        cert: Option<Extension<ClientCertificate>>,
    ) -> Result<Caller, Refusal> {
        let login = match headers.get(header::AUTHORIZATION) {
            None => None,
            Some(v) => Some(basic_credentials(v).ok_or_else(|| {
                Refusal::new(StatusCode::UNAUTHORIZED, "malformed Basic credentials")
            })?),
        };
        Ok(Caller {
            login,
            client_id,
            certificate: cert.map(|Extension(ClientCertificate(cn))| cn),
        })
    }

    fn username(&self) -> &str {
        match (&self.login, &self.certificate) {
            (Some((u, _)), _) => u,
            (None, Some(cn)) => cn,
            (None, None) => "",
        }
    }

    fn client_id(&self) -> String {
        self.client_id
            .clone()
            .unwrap_or_else(|| self.username().to_owned())
    }
}

/// The user and password of an `Authorization: Basic base64(user:password)` header.
pub fn basic_credentials(v: &HeaderValue) -> Option<(String, String)> {
    use base64::Engine;
    let encoded = v.to_str().ok()?.strip_prefix("Basic ")?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, password) = text.split_once(':')?;
    Some((user.to_owned(), password.to_owned()))
}

impl Ingest {
    /// Counts the answer to a publish; passes a refusal on.
    fn count(&self, refusal: Option<&Refusal>) -> Result<(), Refusal> {
        let code = refusal.map_or(200, |r| r.status.as_u16());
        self.gateway.meters.http_publish(code).increment(1);
        match refusal {
            None => Ok(()),
            Some(r) => Err(Refusal {
                status: r.status,
                why: r.why.clone(),
                retry_after: r.retry_after,
            }),
        }
    }

    /// Checks a publish as the gateway checks a PUBLISH, then hands it to the router.
    async fn publish(
        &self,
        peer: SocketAddr,
        who: &Caller,
        topic: String,
        payload: Bytes,
        retain: bool,
        qos1: bool,
    ) -> Result<(), Refusal> {
        let gw = &self.gateway;
        let client_id = who.client_id();
        let grants = self.authorize(peer, who, &client_id).await?;
        let bad = |why: &str| Refusal::new(StatusCode::BAD_REQUEST, why);
        match frame::topic_name_error(topic.as_bytes()) {
            None => {}
            Some(TopicError::Reserved) => {
                return Err(bad("topics starting with $ are the server's"))
            }
            Some(_) => return Err(bad("not a topic name (empty, a wildcard, or U+0000)")),
        }
        let denied = grants
            .as_ref()
            .is_some_and(|g| !g.may_publish(&topic, &client_id, who.username()));
        if denied {
            gw.meters.drop_for("policy_denied").increment(1);
            let why = "topic not granted to this account";
            return Err(Refusal::new(StatusCode::FORBIDDEN, why));
        }
        if gw.config.limits.validate_locations {
            if let Err(why) = location::check(topic.as_bytes(), &payload, now_ms()) {
                gw.meters.drop_for("invalid_payload").increment(1);
                return Err(bad(&format!("invalid location: {why}")));
            }
        }
        self.charge(&client_id)?;
        gw.meters.publishes_received.increment(1);
        if let Some(cluster) = gw.cluster.get() {
            // Cluster hook: accepted here, so to the other nodes too, once.
            cluster.publish(&topic, &payload, retain);
        }
        self.publisher
            .publish(Bytes::from(topic), payload, retain, qos1)
            .await
            .map_err(|e| Refusal::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string()))
    }

    /// The account's grants (None: no credentials file, every topic allowed).
    async fn authorize(
        &self,
        peer: SocketAddr,
        who: &Caller,
        client_id: &str,
    ) -> Result<Option<Arc<crate::policy::Grants>>, Refusal> {
        let Some(auth) = &self.gateway.auth else {
            return Ok(None);
        };
        let login = who.login.as_ref().map(|(u, p)| (u.as_str(), p.as_str()));
        let checked = match (&who.certificate, login) {
            // As over MQTT/TLS: a verified certificate is the login, no password asked.
            (Some(cn), None) => auth
                .check_certificate(cn, client_id)
                .map_err(Refused::Denied),
            _ => {
                auth.check_from(&self.gateway.logins, peer.ip(), client_id, login)
                    .await
            }
        };
        match checked {
            Ok(grants) => Ok(Some(grants)),
            Err(Refused::Denied(Denial::ClientIdNotAllowed)) => Err(Refusal::new(
                StatusCode::FORBIDDEN,
                "client id not allowed for this account",
            )),
            Err(Refused::Denied(_)) => Err(Refusal::new(
                StatusCode::UNAUTHORIZED,
                "a valid username and password are needed",
            )),
            Err(Refused::Held(Hold::Backoff)) => Err(Refusal {
                retry_after: Some(Duration::from_secs(10)),
                ..Refusal::new(StatusCode::TOO_MANY_REQUESTS, "too many failed logins")
            }),
            Err(Refused::Held(Hold::Busy)) => Err(Refusal::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "no room in the password check line",
            )),
        }
    }

    /// Charges the publish quotas: this client id's, then everyone's. A publish over
    /// either is refused, not delayed: HTTP has no socket to slow down.
    fn charge(&self, client_id: &str) -> Result<(), Refusal> {
        let now = tokio::time::Instant::now();
        if self.rates.admit(client_id, now) && self.gateway.global_pacer.try_admit(now) {
            return Ok(());
        }
        Err(Refusal {
            retry_after: Some(Duration::from_secs(1)),
            ..Refusal::new(StatusCode::TOO_MANY_REQUESTS, "over the publish quota")
        })
    }
}
