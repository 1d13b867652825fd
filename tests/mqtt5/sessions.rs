//! Session Expiry Interval (3.1.2.11.2) and Will Delay Interval (3.1.3.2.2), over raw
//! frames to read Session Present and to drop a socket without DISCONNECT. Real seconds
//! pass (the spec counts in seconds), kept short: 3 s intervals, checked with generous
//! bounds by polling, never by one exact sleep.

use crate::raw::{Raw, PATIENCE};
use crate::wire::{id, options, Connect, Props, Will};
use crate::{both, Broker};
use std::time::Duration;
use tokio::time::{sleep, Instant};

fn session(client: &str, expiry: u32) -> Connect {
    Connect::new(client).props(Props::new().u32(id::SESSION_EXPIRY, expiry))
}

/// Connects with `c` and returns Session Present.
async fn present(b: Broker, c: &Connect) -> (Raw, bool) {
    let (raw, ack) = Raw::connect(b.addr, b.name, c).await;
    (raw, ack.session_present)
}

async fn session_expiry(b: Broker) {
    let who = b.name;
    let topic = "mqtt5/session/a";
    let mut publisher = Raw::plain(b.addr, who, &b.id("se-pub")).await;

    // 3 s: kept across a 1 s absence, with what was published meanwhile...
    let three = session(&b.id("se-3"), 3);
    let (mut c, _) = present(b, &three).await;
    c.sub(topic, options(1, false, false, 0)).await;
    c.bye().await;
    publisher
        .publish1(topic, b"while-away", 1, false, &Props::new())
        .await;
    sleep(Duration::from_secs(1)).await;
    let (mut c, kept) = present(b, &three.clone().resume()).await;
    assert!(kept, "[{who}] session expiry 3 s: gone after 1 s");
    let p = c.expect_publish("the message published while away").await;
    assert_eq!(p.text(), "while-away", "[{who}]");
    c.send(&crate::wire::puback(p.pkid)).await;
    c.bye().await;
    // ...and gone after 5.
    sleep(Duration::from_secs(5)).await;
    let (c, kept) = present(b, &three.clone().resume()).await;
    assert!(!kept, "[{who}] session expiry 3 s: still there after 5 s");
    c.bye().await;

    // 0 (absent) with clean_start=false: the session ends with the connection.
    let zero = Connect::new(&b.id("se-0")).resume();
    let (mut c, _) = present(b, &zero).await;
    c.sub(topic, options(1, false, false, 0)).await;
    c.bye().await;
    let (c, kept) = present(b, &zero).await;
    assert!(
        !kept,
        "[{who}] session expiry 0: the session outlived its connection"
    );
    c.bye().await;

    // clean_start=true discards the old session but the new one is kept after it ends.
    let id = b.id("se-clean");
    let (mut c, _) = present(b, &session(&id, 60)).await;
    c.sub(topic, options(1, false, false, 0)).await;
    c.bye().await;
    let (mut c, kept) = present(b, &session(&id, 60)).await;
    assert!(!kept, "[{who}] clean_start=true: Session Present 1");
    publisher
        .publish1(topic, b"after-clean", 2, false, &Props::new())
        .await;
    assert!(
        c.publish_within(Duration::from_secs(1)).await.is_none(),
        "[{who}] clean_start=true kept the old session's subscription"
    );
    c.bye().await;
    let (c, kept) = present(b, &session(&id, 60).resume()).await;
    assert!(
        kept,
        "[{who}] the session begun with clean_start=true and expiry 60 was not kept"
    );
    c.bye().await;

    // A DISCONNECT with Session Expiry 0 ends a session that had 60.
    let id = b.id("se-bye0");
    let (mut c, _) = present(b, &session(&id, 60)).await;
    c.sub(topic, options(1, false, false, 0)).await;
    c.bye_with(0, &Props::new().u32(id::SESSION_EXPIRY, 0))
        .await;
    let (c, kept) = present(b, &session(&id, 60).resume()).await;
    assert!(
        !kept,
        "[{who}] DISCONNECT with Session Expiry 0 did not end the session"
    );
    c.bye().await;
}

#[tokio::test]
async fn session_expiry_interval_keeps_and_ends_sessions() {
    both("", "", session_expiry).await;
}

/// A CONNECT with a will on `mqtt5/will/{tag}`, delayed `delay` seconds, and a 60 s
/// session (a will waits at most until its session ends, 3.1.3.2.2).
fn with_will(client: &str, tag: &str, delay: u32, props: Props) -> Connect {
    let mut c = session(client, 60);
    c.will = Some(Will {
        topic: format!("mqtt5/will/{tag}"),
        payload: format!("gone:{tag}").into_bytes(),
        retain: false,
        props: props.u32(id::WILL_DELAY, delay),
    });
    c
}

async fn will_delay(b: Broker) {
    let who = b.name;
    let mut watcher = Raw::plain(b.addr, who, &b.id("will-watch")).await;
    watcher
        .sub("mqtt5/will/#", options(0, false, false, 0))
        .await;

    // Delayed 3 s: not within 1 s of the drop, within 10 s.
    let (c, _) = present(b, &with_will(&b.id("will-late"), "late", 3, Props::new())).await;
    c.drop_socket();
    let dropped = Instant::now();
    if let Some(p) = watcher.publish_within(Duration::from_secs(1)).await {
        panic!(
            "[{who}] will with delay 3 s came {:?} after the drop: {}",
            dropped.elapsed(),
            p.text()
        );
    }
    let p = watcher
        .publish_within(PATIENCE - Duration::from_secs(1))
        .await
        .unwrap_or_else(|| panic!("[{who}] the delayed will never came"));
    assert_eq!(
        (p.topic.as_str(), p.text().as_str()),
        ("mqtt5/will/late", "gone:late"),
        "[{who}]"
    );

    // Back within 1 s, same session: the will is cancelled.
    let back = with_will(&b.id("will-back"), "back", 3, Props::new());
    let (c, _) = present(b, &back).await;
    c.drop_socket();
    let dropped = Instant::now();
    sleep(Duration::from_millis(300)).await;
    let mut again = back.clone().resume();
    again.will = None;
    let (c, kept) = present(b, &again).await;
    assert!(kept, "[{who}] the 60 s session was not kept over 300 ms");
    let wait = Duration::from_secs(5).saturating_sub(dropped.elapsed());
    if let Some(p) = watcher.publish_within(wait).await {
        panic!(
            "[{who}] the will came {:?} after the drop although the client was back: {}",
            dropped.elapsed(),
            p.text()
        );
    }
    c.bye().await;
}

#[tokio::test]
async fn will_delay_interval_delays_the_will_and_a_quick_return_cancels_it() {
    both("", "", will_delay).await;
}

async fn will_properties(b: Broker) {
    let who = b.name;
    let mut watcher = Raw::plain(b.addr, who, &b.id("wp-watch")).await;
    watcher
        .sub("mqtt5/will/#", options(0, false, false, 0))
        .await;
    let props = Props::new()
        .user("reason", "lost")
        .str(id::CONTENT_TYPE, "text/plain");
    let (c, _) = present(b, &with_will(&b.id("wp"), "props", 0, props)).await;
    c.drop_socket();
    let p = watcher.expect_publish("the will").await;
    assert_eq!(p.text(), "gone:props", "[{who}]");
    assert_eq!(
        p.props.users(),
        [("reason".to_string(), "lost".to_string())],
        "[{who}] the will's user property"
    );
    assert_eq!(
        p.props.string(id::CONTENT_TYPE),
        Some("text/plain"),
        "[{who}] the will's content type"
    );
}

#[tokio::test]
async fn a_will_arrives_with_its_properties() {
    both("", "", will_properties).await;
}

/// What a subscription was given survives with its session: a client that comes back
/// to a kept session still gets its Subscription Identifier on each message, and its
/// No Local subscription still keeps its own publishes from it.
async fn resumed_options(b: Broker) {
    let who = b.name;
    let topic = "mqtt5/resumed/a";
    let kept = session(&b.id("ro"), 60);
    let (mut c, _) = present(b, &kept).await;
    let props = Props::new().var(id::SUBSCRIPTION_ID, 5);
    let codes = c
        .subscribe(3, &props, &[(topic, options(1, true, false, 0))])
        .await;
    assert_eq!(codes, [1], "[{who}] SUBACK");
    c.bye().await;
    let (mut c, present_again) = present(b, &kept.clone().resume()).await;
    assert!(present_again, "[{who}] session kept");
    // Its own publish first: No Local keeps it away; then another client's.
    c.publish1(topic, b"own", 1, false, &Props::new()).await;
    let mut other = Raw::plain(b.addr, who, &b.id("ro-other")).await;
    other
        .publish1(topic, b"other", 1, false, &Props::new())
        .await;
    let p = c.expect_publish("the other client's message").await;
    assert_eq!(p.text(), "other", "[{who}] No Local lost on resume");
    assert_eq!(
        p.props.num(id::SUBSCRIPTION_ID),
        Some(5),
        "[{who}] Subscription Identifier lost on resume"
    );
    c.send(&crate::wire::puback(p.pkid)).await;
    // Ends the kept session so the next run starts afresh.
    c.bye_with(0, &Props::new().u32(id::SESSION_EXPIRY, 0))
        .await;
}

#[tokio::test]
async fn a_resumed_session_keeps_its_subscription_options_and_identifiers() {
    both("", "", resumed_options).await;
}
