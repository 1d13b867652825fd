//! Tests of the shared ingest links (`lanes.rs`) against a real rumqttd router.

use crate::local::LocalSubscriber;
use crate::router::{RouterHandle, RouterSettings};
use rumqttd::protocol::{Packet, Publish};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

fn publish(n: u32) -> Packet {
    let payload = bytes::Bytes::from(n.to_string());
    Packet::Publish(
        Publish::new(bytes::Bytes::from_static(b"lanes/test"), payload, false),
        None,
    )
}

/// A QoS 1 publish to `lanes/test` with packet id `pkid`, through rumqttd's own
/// serialized form (header, packet id, topic, payload; its QoS is private).
fn qos1(pkid: u16, retain: bool, payload: &str) -> Packet {
    let mut b = vec![0x32 | u8::from(retain)];
    b.extend_from_slice(&pkid.to_be_bytes());
    b.extend_from_slice(&10u16.to_be_bytes());
    b.extend_from_slice(b"lanes/test");
    b.extend_from_slice(payload.as_bytes());
    Packet::Publish(Publish::deserialize(bytes::Bytes::from(b)), None)
}

type Link = (rumqttd::local::LinkTx, rumqttd::local::LinkRx);

/// A bare rumqttd router over `polled`, with a subscriber's link to `lanes/test` and a
/// link for a lane (built here: the router's sender type is private).
fn bare_router(polled: &rumqttd::Polled) -> (Link, Link) {
    let router_tx = rumqttd::Router::new(
        0,
        rumqttd::RouterConfig {
            max_connections: 10,
            max_outgoing_packet_count: 100,
            max_segment_size: 1 << 20,
            max_segment_count: 4,
            custom_segment: None,
            initialized_filters: None,
            shared_subscriptions_strategy: Default::default(),
        },
    )
    .with_polled(polled.clone())
    .spawn();
    let build = |id: &str| {
        let (tx, rx, _) = rumqttd::local::LinkBuilder::new(id, router_tx.clone())
            .clean_session(true)
            .build()
            .expect("link");
        (tx, rx)
    };
    let (mut sub_tx, sub_rx) = build("sub");
    sub_tx.subscribe("lanes/test").expect("subscribe");
    ((sub_tx, sub_rx), build("lane"))
}

/// The payload of the next publish the router forwards on `rx`, within 10 s.
fn forwarded(rx: &mut rumqttd::local::LinkRx) -> bytes::Bytes {
    let until = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        match rx.recv_deadline(until).expect("link") {
            Some(rumqttd::Notification::Forward(f)) => return f.publish.payload,
            Some(_) => {}
            None => panic!("nothing within 10 s"),
        }
    }
}

/// A router with the default window and a subscriber `id` to `lanes/test` on it.
async fn router_with_subscriber(id: &str) -> (Arc<RouterHandle>, LocalSubscriber) {
    router_with_window(id, Some(super::WINDOW)).await
}

async fn router_with_window(
    id: &str,
    window: Option<Duration>,
) -> (Arc<RouterHandle>, LocalSubscriber) {
    let router = RouterHandle::spawn(&RouterSettings {
        max_connections: 10,
        max_outgoing_packet_count: 10_000,
        max_segment_size: 1 << 20,
        max_segment_count: 4,
        coalesce_window: window,
    })
    .expect("router");
    let sub = LocalSubscriber::new(&router, id, &["lanes/test"])
        .await
        .expect("subscriber");
    (router, sub)
}

#[tokio::test]
async fn under_load_the_window_sends_everything_and_then_goes_quiet() {
    let (router, mut sub) = router_with_subscriber("lanes-test").await;
    // Enough single pushes, one message each, to switch the window on.
    let n = 3_000u32;
    for i in 0..n {
        router
            .push_shared(0, &mut vec![publish(i)], true)
            .expect("lane");
        if i % 100 == 0 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    let mut got = 0u32;
    while got < n {
        let next = tokio::time::timeout(Duration::from_secs(10), sub.next()).await;
        let (_, payload) = next.expect("every message arrives").expect("link");
        assert_eq!(payload, got.to_string(), "in order");
        got += 1;
    }
    let until = std::time::Instant::now() + Duration::from_secs(10);
    while !router.lanes.polled.is_on() {
        assert!(
            std::time::Instant::now() < until,
            "the window never came on"
        );
        router
            .push_shared(0, &mut vec![publish(0)], true)
            .expect("lane");
        let _ = sub.next().await;
    }
    // With the window on, a lone push does not notify: the router takes it at its next
    // look, not left waiting.
    let direct = router.lanes.direct.load(Ordering::Relaxed);
    router
        .push_shared(1, &mut vec![publish(7)], true)
        .expect("lane");
    assert_eq!(router.lanes.direct.load(Ordering::Relaxed), direct);
    let last = tokio::time::timeout(Duration::from_secs(10), sub.next()).await;
    assert_eq!(last.expect("taken within the window").expect("link").1, "7");
    // Quiet for QUIET_WINDOWS windows: pushes notify on their own again.
    let until = std::time::Instant::now() + Duration::from_secs(10);
    while router.lanes.polled.is_on() {
        assert!(
            std::time::Instant::now() < until,
            "the window never went off"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn with_no_window_every_push_notifies_and_the_window_never_comes_on() {
    let (router, mut sub) = router_with_window("lanes-off", None).await;
    // What switches a window on within 10 ms (first test: one push at a time, each
    // finding its lane empty, thousands a second), for 300 ms: the window stays off
    // all along and every message arrives, in order.
    let until = std::time::Instant::now() + Duration::from_millis(300);
    let mut i = 0u32;
    while std::time::Instant::now() < until {
        router
            .push_shared(0, &mut vec![publish(i)], true)
            .expect("lane");
        let next = tokio::time::timeout(Duration::from_secs(10), sub.next()).await;
        let (_, payload) = next.expect("every message arrives").expect("link");
        assert_eq!(payload, i.to_string(), "in order");
        assert!(!router.lanes.polled.is_on(), "window off");
        i += 1;
    }
    assert!(i > 100, "only {i} pushes in 300 ms");
    // With nothing in flight, a lone push reaches the router by its own notification.
    router
        .push_shared(1, &mut vec![publish(7)], true)
        .expect("lane");
    let last = tokio::time::timeout(Duration::from_secs(10), sub.next()).await;
    assert_eq!(last.expect("sent").expect("link").1, "7");
}

/// A lane over a router whose channel reads as full: a push does not notify (the
/// send could block a tokio worker), and the router takes it when it next runs out of
/// work (with the window off: it never looks on its own).
#[tokio::test]
async fn with_the_router_channel_full_a_push_is_taken_when_the_router_next_runs_dry() {
    let polled = rumqttd::Polled::new(None, super::QUIET_WINDOWS);
    let ((mut sub_tx, mut sub_rx), (tx, rx)) = bare_router(&polled);
    let full = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let room = {
        let full = full.clone();
        Box::new(move || !full.load(Ordering::Relaxed))
    };
    let lanes = super::Lanes::new(vec![(tx, rx)], polled, room);
    lanes.push(0, &mut vec![publish(1)], true).expect("lane");
    assert_eq!(
        lanes.direct.load(Ordering::Relaxed),
        0,
        "no send while full"
    );
    // Whatever wakes the router next: here the subscriber's own publish elsewhere.
    sub_tx.publish("lanes/other", "wake").expect("publish");
    assert_eq!(
        forwarded(&mut sub_rx),
        "1",
        "taken before the router blocked again"
    );
    full.store(false, Ordering::Relaxed);
    lanes.push(0, &mut vec![publish(2)], true).expect("lane");
    assert_eq!(
        lanes.direct.load(Ordering::Relaxed),
        1,
        "sent at once with room"
    );
    assert_eq!(forwarded(&mut sub_rx), "2");
}

/// A QoS 1 publish through a polled link reaches its subscriber, and the router
/// answers nothing on the link: the gateway acks it (`gateway/publishes.rs`), and a
/// PUBACK there would wait forever for a reader (rumqttd's `Polled`).
#[test]
fn the_router_acks_no_qos1_publish_from_a_lane() {
    let polled = rumqttd::Polled::new(None, super::QUIET_WINDOWS);
    let ((_sub_tx, mut sub_rx), (mut tx, mut rx)) = bare_router(&polled);
    polled.set_links(vec![rx.id()]);
    assert!(super::super::send_now(&mut tx, qos1(5, false, "1")));
    assert_eq!(forwarded(&mut sub_rx), "1");
    // A second pass of the router after the one that appended it: an ack would have
    // been written to the lane in the first.
    assert!(super::super::send_now(&mut tx, publish(2)));
    assert_eq!(forwarded(&mut sub_rx), "2");
    assert!(
        matches!(rx.try_next(), Ok(None)),
        "the router answered on the lane"
    );
}

/// Turns the window on as a push does: on, then a notification (here through the last
/// lane, of a publish nobody reads), which wakes the router to start looking.
fn switch_on(router: &RouterHandle) {
    router.lanes.polled.turn_on();
    let wake = Packet::Publish(Publish::new(&b"lanes/nobody"[..], &b""[..], false), None);
    let last = router.lanes.lanes.len() - 1;
    let mut waiting = router.lanes.lanes[last].tx.lock().expect("lane");
    super::notify(&mut waiting.tx, wake).expect("lane");
}

/// The gateway acks a QoS 1 publish as soon as it is in a lane: a retained one is sent
/// to the router at once even under the window, so that a SUBSCRIBE sent after its
/// PUBACK reaches the router behind it; a plain one waits for the window.
#[tokio::test]
async fn under_the_window_a_retained_qos1_publish_notifies_at_once() {
    let (router, mut sub) = router_with_subscriber("lanes-retained").await;
    for (n, retain) in [(1u16, false), (2, true), (3, false), (4, true)] {
        // On again before each: the router turns it off after QUIET_WINDOWS windows
        // that found nothing.
        switch_on(&router);
        let direct = router.lanes.direct.load(Ordering::Relaxed);
        router
            .push_shared(0, &mut vec![qos1(n, retain, &n.to_string())], true)
            .expect("lane");
        let sent = router.lanes.direct.load(Ordering::Relaxed) - direct;
        assert_eq!(sent, u64::from(retain), "publish {n}, retained: {retain}");
        let next = tokio::time::timeout(Duration::from_secs(10), sub.next()).await;
        assert_eq!(next.expect("arrives").expect("link").1, n.to_string());
    }
}

#[tokio::test]
async fn under_the_window_a_flood_notifies_at_once_unless_told_not_to() {
    let (router, mut sub) = router_with_subscriber("lanes-flood").await;
    // On again before each step: the router turns it off after QUIET_WINDOWS windows
    // that found nothing.
    switch_on(&router);
    // 800 x (4 + 10 + 100) log bytes: past NOTIFY_BYTES in one push.
    let flood = |from: u32| -> Vec<Packet> {
        (from..from + 800)
            .map(|n| {
                let payload = bytes::Bytes::from(format!("{n:0100}"));
                Packet::Publish(
                    Publish::new(bytes::Bytes::from_static(b"lanes/test"), payload, false),
                    None,
                )
            })
            .collect()
    };
    // Until the router took what waits in lane 0 (at its next look, within the
    // window): a push then starts a fresh batch.
    let drained = || async {
        let until = std::time::Instant::now() + Duration::from_secs(10);
        while router.waiting_shared(0) > 0 {
            assert!(std::time::Instant::now() < until, "the window never sent");
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    };
    // Pushes that notified ahead of the window.
    let early = || router.lanes.early.load(Ordering::Relaxed);
    let small = router.push_shared(0, &mut flood(0)[..1].to_vec(), true);
    assert!(small.expect("lane") < super::NOTIFY_BYTES);
    assert_eq!(early(), 0, "small: the window");
    drained().await;
    switch_on(&router);
    router
        .push_shared(0, &mut flood(1_000), false)
        .expect("lane");
    assert_eq!(early(), 0, "told to wait");
    drained().await;
    switch_on(&router);
    router
        .push_shared(0, &mut flood(2_000), true)
        .expect("lane");
    assert_eq!(early(), 1, "a flood at once");
    // Everything arrives, in order.
    let mut last = None::<u32>;
    for _ in 0..1_601 {
        let next = tokio::time::timeout(Duration::from_secs(10), sub.next()).await;
        let (_, payload) = next.expect("every message arrives").expect("link");
        let n: u32 = std::str::from_utf8(&payload)
            .ok()
            .and_then(|p| p.parse().ok())
            .expect("a number");
        assert!(last.is_none_or(|l| l < n), "in order");
        last = Some(n);
    }
}
