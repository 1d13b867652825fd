//! Putting the store's state back into a fresh router, before any client is served.
//!
//! - Retained messages are published again, retained, through an in-process link, with
//!   their MQTT 5 properties and the expiry they have left.
//! - Each persistent session is rebuilt as the router would have kept it: a link with its
//!   client id and `clean_session=false` takes its filters and disconnects, so the client
//!   finds `session_present=1` and its subscriptions, and what is published while it is
//!   still away is queued for it. What it was owed before the restart the gateway replays
//!   itself (see `durable/owed.rs`); the router never had those messages.
//!
//! Retained messages go first: a session subscribed before them would get them queued as
//! new messages. Last, the restore link subscribes to a filter of its own and waits for
//! the SUBACK: the router takes events in order, so by then it has taken all of the above.

use crate::local::LOCAL_PREFIX;
use crate::router::{disconnect_packet, RouterError, RouterHandle};
use crate::store::{Retained, SavedSession};
use rumqttd::protocol::{Filter, Packet, Publish, QoS, RetainForwardRule, Subscribe};
use rumqttd::Notification;
use std::time::Duration;

/// How long the router may take to confirm it has taken the whole restore.
const CONFIRM_WITHIN: Duration = Duration::from_secs(60);
/// A filter only the restore link subscribes to, for its confirmation.
const DONE_FILTER: &str = "fleetcast-restore/done";

/// Publishes `retained` and rebuilds `sessions` in the router; returns once the router has
/// taken all of it.
///
/// # Errors
/// The router refused a link, or did not confirm within [`CONFIRM_WITHIN`].
pub async fn restore(
    router: &RouterHandle,
    retained: Vec<Retained>,
    sessions: &[SavedSession],
) -> Result<(), RouterError> {
    let (mut tx, mut rx, _) = router
        .connect(&format!("{LOCAL_PREFIX}restore"), true)
        .await?;
    // Delivery QoS is the subscriber's in rumqttd, so QoS 0 republishes lose nothing. A
    // message whose expiry ran out while fleetcast was down is not put back.
    let now = fleetcast_proto::time::unix_now();
    let publishes = retained
        .into_iter()
        .filter(|r| !r.props.as_ref().is_some_and(|p| p.expired(now)))
        .map(|r| {
            let props = r.props.as_ref().map(|p| p.publish(now));
            Packet::Publish(Publish::new(r.topic, r.payload, true), props)
        });
    tx.buffer().extend(publishes);
    for session in sessions {
        rebuild(router, session).await?;
    }
    let done = subscribe(1, &[(DONE_FILTER.to_owned(), 0)]);
    tx.send(done).await.map_err(refused)?;
    let confirmed = tokio::time::timeout(CONFIRM_WITHIN, async {
        loop {
            match rx.next().await {
                Ok(Some(Notification::DeviceAck(ack))) => {
                    if matches!(
                        Option::<Packet>::from(Notification::DeviceAck(ack)),
                        Some(Packet::SubAck(..))
                    ) {
                        return Ok(());
                    }
                }
                Ok(Some(Notification::Unschedule)) => rx.wake().await.map_err(refused)?,
                Ok(Some(Notification::Disconnect(..))) | Err(_) => {
                    return Err(RouterError::Stopped)
                }
                Ok(_) => {}
            }
        }
    })
    .await;
    let _ = tx.send(disconnect_packet()).await;
    confirmed.map_err(|_| RouterError::Stopped)?
}

/// The router's side of one persistent session: its link, its filters, gone again.
async fn rebuild(router: &RouterHandle, session: &SavedSession) -> Result<(), RouterError> {
    let (mut tx, _rx, _) = router.connect(&session.client_id, false).await?;
    if !session.filters.is_empty() {
        tx.buffer().push_back(subscribe(1, &session.filters));
    }
    tx.send(disconnect_packet()).await.map_err(refused)?;
    Ok(())
}

fn refused(e: rumqttd::local::LinkError) -> RouterError {
    RouterError::Refused(Box::new(e))
}

/// A SUBSCRIBE of `filters` (filter, QoS).
fn subscribe(pkid: u16, filters: &[(String, u8)]) -> Packet {
    let filters = filters
        .iter()
        .map(|(path, qos)| Filter {
            path: path.clone(),
            qos: match qos {
                0 => QoS::AtMostOnce,
                1 => QoS::AtLeastOnce,
                _ => QoS::ExactlyOnce,
            },
            nolocal: false,
            preserve_retain: false,
            retain_forward_rule: RetainForwardRule::OnEverySubscribe,
        })
        .collect();
    Packet::Subscribe(Subscribe { pkid, filters }, None)
}
