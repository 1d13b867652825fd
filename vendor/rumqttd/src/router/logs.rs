use super::Ack;
use slab::Slab;
use tracing::{info, trace};

use crate::protocol::{
    matches, ConnAck, ConnAckProperties, PingResp, PubAck, PubComp, PubRec, PubRel, Publish,
    PublishProperties, SubAck, UnsubAck,
};
use crate::router::{DataRequest, FilterIdx, SubscriptionMeter, Waiters};
use crate::{ConnectionId, Filter, Offset, RouterConfig, Topic};

use crate::segments::{CommitLog, Position};
use crate::Storage;
use std::collections::{HashMap, VecDeque};
use std::io;
use std::time::Instant;

type PubWithProp = (Publish, Option<PublishProperties>);

#[derive(Clone)]
pub struct PublishData {
    pub publish: Publish,
    pub properties: Option<PublishProperties>,
    pub timestamp: Instant,
}

impl PublishData {
    /// What is left of its Message Expiry Interval (fleetcast: the rule `native_readv` and
    /// `forward_direct` share): None once it has expired, `Some(None)` when it has none.
    /// `now` is asked only for a message with an interval.
    pub fn expiry_left(&self, now: impl FnOnce() -> Instant) -> Option<Option<u32>> {
        let Some(interval) = self
            .properties
            .as_ref()
            .and_then(|p| p.message_expiry_interval)
        else {
            return Some(None);
        };
        let spent = (now() - self.timestamp).as_secs() as u32;
        // Lazily: the subtraction would overflow for an expired message.
        (spent < interval).then(|| Some(interval - spent))
    }
}

impl From<PubWithProp> for PublishData {
    fn from((publish, properties): PubWithProp) -> Self {
        PublishData {
            publish,
            properties,
            timestamp: Instant::now(),
        }
    }
}

// TODO: remove this from here
impl Storage for PublishData {
    // TODO: calculate size of publish properties as well!
    fn size(&self) -> usize {
        let publish = &self.publish;
        4 + publish.topic.len() + publish.payload.len()
    }
}

/// Stores 'device' data and 'actions' data in native commitlog
/// organized by subscription filter. Device data is replicated
/// while actions data is not
pub struct DataLog {
    pub config: RouterConfig,
    /// Native commitlog data organized by subscription. Contains
    /// device data and actions data logs.
    ///
    /// Device data is replicated while actions data is not.
    /// Also has waiters used to wake connections/replicator tracker
    /// which are caught up with all the data on 'Filter' and waiting
    /// for new data
    pub native: Slab<Data<PublishData>>,
    /// Map of subscription filter name to filter index
    filter_indexes: HashMap<Filter, FilterIdx>,
    retained_publishes: HashMap<Topic, PublishData>,
    /// List of filters associated with a topic
    publish_filters: HashMap<Topic, Vec<FilterIdx>>,
    /// How many topics `publish_filters` holds at most (fleetcast): it is a cache, refilled
    /// from `filter_indexes` on a miss, and as published it grew by every topic ever
    /// published to, so a client publishing to ever new topics grew the router without bound.
    max_cached_topics: usize,
}

/// Topics the router remembers the matching filters of (fleetcast); when full, it starts
/// over. 2^19 topics fit a table of 2^20 buckets of 49 bytes, and each topic holds two small
/// allocations (about 64 bytes for a topic of 40): about 80 MiB at most.
const MAX_CACHED_TOPICS: usize = 1 << 19;

impl DataLog {
    pub fn new(config: RouterConfig) -> io::Result<DataLog> {
        let mut native = Slab::new();
        let mut filter_indexes = HashMap::new();
        let retained_publishes = HashMap::new();
        let publish_filters = HashMap::new();

        if let Some(warmup_filters) = config.initialized_filters.clone() {
            for filter in warmup_filters {
                let data = Data::new(&filter, &config);

                // Add commitlog to datalog and add datalog index to filter to
                // datalog index map
                let idx = native.insert(data);
                filter_indexes.insert(filter, idx);
            }
        }

        Ok(DataLog {
            config,
            native,
            publish_filters,
            filter_indexes,
            retained_publishes,
            max_cached_topics: MAX_CACHED_TOPICS,
        })
    }

    pub fn meter(&mut self, filter: &str) -> Option<&mut SubscriptionMeter> {
        let data = self.native.get_mut(*self.filter_indexes.get(filter)?)?;
        Some(&mut data.meter)
    }

    pub fn waiters(&self, filter: &Filter) -> Option<&Waiters<DataRequest>> {
        self.native
            .get(*self.filter_indexes.get(filter)?)
            .map(|data| &data.waiters)
    }

    pub fn remove_waiters_for_id(
        &mut self,
        id: ConnectionId,
        filter: &Filter,
    ) -> Option<DataRequest> {
        let data = self
            .native
            .get_mut(*self.filter_indexes.get(filter)?)
            .unwrap();
        let waiters = data.waiters.get_mut();

        waiters
            .iter()
            .position(|&(conn_id, _)| conn_id == id)
            .and_then(|index| {
                waiters
                    .swap_remove_back(index)
                    .map(|(_, data_req)| data_req)
            })
    }

    // TODO: Currently returning a Option<Vec> instead of Option<&Vec> due to Rust borrow checker
    // limitation
    pub fn matches(&mut self, topic: &str) -> Option<Vec<usize>> {
        match &self.publish_filters.get(topic) {
            Some(v) => Some(v.to_vec()),
            None => {
                let v: Vec<usize> = self
                    .filter_indexes
                    .iter()
                    .filter(|(filter, _)| matches(topic, filter))
                    .map(|(_, filter_idx)| *filter_idx)
                    .collect();

                if !v.is_empty() {
                    make_room_for_a_topic(&mut self.publish_filters, self.max_cached_topics);
                    self.publish_filters.insert(topic.to_owned(), v.clone());
                }

                Some(v)
            }
        }
    }

    /// A session (live or saved) now holds `filter` (fleetcast). A `$share/group/` prefix is
    /// the group's: the log is the filter's.
    pub fn hold(&mut self, filter: &str) {
        if let Some(data) = self.data_of(filter) {
            data.holders += 1;
        }
    }

    /// A session no longer holds `filter` (fleetcast): when none does, what its log keeps can
    /// never be read (a new subscription starts at the log's next offset), so it is dropped,
    /// and nothing more is kept until somebody holds the filter again.
    pub fn release(&mut self, filter: &str) {
        if let Some(data) = self.data_of(filter) {
            data.holders = data.holders.saturating_sub(1);
            if data.holders == 0 {
                data.log.clear();
            }
        }
    }

    fn data_of(&mut self, filter: &str) -> Option<&mut Data<PublishData>> {
        let filter = shared_filter_path(filter).unwrap_or(filter);
        let idx = *self.filter_indexes.get(filter)?;
        self.native.get_mut(idx)
    }

    /// Appends a publish to the log of every filter that matches `topic`, and returns the
    /// offset of the last append ((0, 0) when none matches). fleetcast: the same as
    /// `matches` and an append per filter, without copying the list of filters per publish
    /// and without copying the publish for a filter nobody holds.
    pub fn append_matching(
        &mut self,
        publish: Publish,
        properties: Option<PublishProperties>,
        notifications: &mut VecDeque<(ConnectionId, DataRequest)>,
    ) -> Result<Offset, std::str::Utf8Error> {
        // fleetcast: one lookup of the topic on the way every publish takes (a hit), not two.
        let DataLog {
            native,
            filter_indexes,
            publish_filters,
            max_cached_topics,
            ..
        } = self;
        let topic = std::str::from_utf8(&publish.topic)?;
        let mut o = (0, 0);
        let filter_idxs = match publish_filters.get(topic) {
            Some(v) => v,
            None => {
                let v: Vec<usize> = filter_indexes
                    .iter()
                    .filter(|(filter, _)| matches(topic, filter))
                    .map(|(_, filter_idx)| *filter_idx)
                    .collect();
                if v.is_empty() {
                    return Ok(o);
                }
                make_room_for_a_topic(publish_filters, *max_cached_topics);
                publish_filters.entry(topic.to_owned()).or_insert(v)
            }
        };
        // fleetcast: the last filter held takes the publish itself, the others a clone (a
        // clone raises the reference counts of topic and payload, and dropping the original
        // lowered them again).
        let held = |filter_idx: &usize| native.get(*filter_idx).is_some_and(|d| d.holders > 0);
        let Some(last) = filter_idxs.iter().rposition(held) else {
            return Ok(o);
        };
        let (others, last) = filter_idxs.split_at(last);
        let mut append = |data: &mut Data<PublishData>, publish_data: PubWithProp| {
            let pkid = publish_data.0.pkid;
            let (offset, filter) = data.append(publish_data.into(), notifications);
            trace!(
                pkid,
                "Appended to commitlog: {}[{}, {})",
                filter,
                offset.0,
                offset.1,
            );
            o = offset;
        };
        for &filter_idx in others {
            if let Some(data) = native.get_mut(filter_idx).filter(|d| d.holders > 0) {
                append(data, (publish.clone(), properties.clone()));
            }
        }
        if let Some(data) = native.get_mut(last[0]) {
            append(data, (publish, properties));
        }
        Ok(o)
    }

    pub fn next_native_offset(&mut self, filter: &str) -> (FilterIdx, Offset) {
        let publish_filters = &mut self.publish_filters;
        let filter_indexes = &mut self.filter_indexes;

        let (filter_idx, data) = match filter_indexes.get(filter) {
            Some(idx) => (*idx, self.native.get(*idx).unwrap()),
            None => {
                let data = Data::new(filter, &self.config);

                // Add commitlog to datalog and add datalog index to filter to
                // datalog index map
                let idx = self.native.insert(data);
                self.filter_indexes.insert(filter.to_owned(), idx);

                // Match new filter to existing topics and add to publish_filters if it matches
                for (topic, filters) in publish_filters.iter_mut() {
                    if matches(topic, filter) {
                        filters.push(idx);
                    }
                }

                (idx, self.native.get(idx).unwrap())
            }
        };

        (filter_idx, data.log.next_offset())
    }

    pub fn native_readv(
        &self,
        filter_idx: FilterIdx,
        offset: Offset,
        len: u64,
    ) -> io::Result<(Position, Vec<(PubWithProp, Offset)>)> {
        // unwrap to get index of `self.native` is fine here, because when a new subscribe packet
        // arrives in `Router::handle_device_payload`, it first calls the function
        // `next_native_offset` which creates a new commitlog if one doesn't exist. So any new
        // reads will definitely happen on a valid filter.
        let data = self.native.get(filter_idx).unwrap();
        let mut o = Vec::with_capacity(len.min(1024) as usize);
        // TODO: `readv` is infallible but its current return type does not
        // reflect that. Consequently, this method is also infallible.
        // Encoding this information is important so that calling function
        // has more information on how this method behaves.
        let next = data.log.readv(offset, len, &mut o)?;

        let now = Instant::now();
        o.retain_mut(|(pubdata, _)| {
            // ignore expired messages; a live one goes with the time it has left
            // ref: https://docs.oasis-open.org/mqtt/mqtt/v5.0/os/mqtt-v5.0-os.html#_Toc3901112
            let Some(left) = pubdata.expiry_left(|| now) else {
                return false;
            };
            if let (Some(left), Some(p)) = (left, pubdata.properties.as_mut()) {
                p.message_expiry_interval = Some(left);
            }
            true
        });

        // no need to include timestamp when returning
        let o = o
            .into_iter()
            .map(|(pubdata, offset)| ((pubdata.publish, pubdata.properties), offset))
            .collect();

        Ok((next, o))
    }

    /// Hands each publish `native_readv` would read to `each` (fleetcast): the router makes
    /// its forwards from them with no list in between.
    pub fn native_read_each(
        &self,
        filter_idx: FilterIdx,
        offset: Offset,
        len: u64,
        each: impl FnMut(&PublishData, Offset),
    ) -> io::Result<Position> {
        // As in `native_readv`: the filter's log exists once a subscribe prepared it.
        let data = self.native.get(filter_idx).unwrap();
        data.log.read_each(offset, len, each)
    }

    pub fn shadow(&mut self, filter: &str) -> Option<PubWithProp> {
        let data = self.native.get_mut(*self.filter_indexes.get(filter)?)?;
        data.log.last().map(|p| (p.publish, p.properties))
    }

    /// This method is called when the subscriber has caught up with the commit log. In which case,
    /// instead of actively checking for commits in each `Router::run_inner` iteration, we instead
    /// wait and only try reading again when new messages have been added to the commit log. This
    /// methods converts a `DataRequest` (which actively reads the commit log in `Router::consume`)
    /// to a `Waiter` (which only reads when notified).
    pub fn park(&mut self, id: ConnectionId, request: DataRequest) {
        // calling unwrap on index here is fine, because only place this function is called is in
        // `Router::consume` method, when the status after reading from commit log of the same
        // filter as `request` is "done", that is, the subscriber has caught up. In other words,
        // there has been atleast 1 call to `native_readv` for the same filter, which means if
        // `native_readv` hasn't paniced, so this won't panic either.
        let data = self.native.get_mut(request.filter_idx).unwrap();
        data.waiters.register(id, request);
    }

    /// Drops what a filter's log holds once nobody can read it again (fleetcast): every
    /// session holding the filter waits at the log's end (a saved session, away, does
    /// not, nor one still reading), none reads it as part of a shared group, and none has
    /// a message of it unacknowledged (`unacked`: a persistent session that goes away
    /// reads those again from the log when it comes back). As published, a log kept what
    /// its readers had read until its segments filled (4 MiB): a rider following one
    /// driver at 1 Hz for an hour kept 3,600 of its fixes, for nothing.
    pub fn trim_read(
        &mut self,
        filter_idx: FilterIdx,
        unacked: impl Fn(ConnectionId, FilterIdx) -> bool,
    ) {
        let Some(data) = self.native.get_mut(filter_idx) else {
            return;
        };
        if data.log.is_empty() {
            return;
        }
        let waiting = data.waiters.waiters();
        if waiting.len() < data.holders {
            return;
        }
        if waiting
            .iter()
            .any(|(id, request)| request.group.is_some() || unacked(*id, filter_idx))
        {
            return;
        }
        data.log.trim();
    }

    /// Cleanup a connection from all the waiters
    pub fn clean(&mut self, id: ConnectionId) -> Vec<DataRequest> {
        let mut inflight = Vec::new();
        for (_, data) in self.native.iter_mut() {
            inflight.append(&mut data.waiters.remove(id));
        }

        inflight
    }

    pub fn insert_to_retained_publishes(
        &mut self,
        publish: Publish,
        publish_properties: Option<PublishProperties>,
        topic: Topic,
    ) {
        let pub_with_props = (publish, publish_properties);
        self.retained_publishes.insert(topic, pub_with_props.into());
    }

    pub fn remove_from_retained_publishes(&mut self, topic: Topic) {
        self.retained_publishes.remove(&topic);
    }

    pub fn read_retained_messages(&mut self, filter: &str) -> Vec<PubWithProp> {
        trace!(info = "reading retain msg", filter = &filter);
        let now = Instant::now();

        // discard expired retained messages
        self.retained_publishes.retain(|_, pubdata| {
            // Keep data if no properties exists, which implies no message expiry!
            let Some(properties) = pubdata.properties.as_mut() else {
                return true;
            };

            // Keep data if there is no message_expiry_interval
            let Some(message_expiry_interval) = properties.message_expiry_interval.as_mut() else {
                return true;
            };

            let time_spent = (now - pubdata.timestamp).as_secs() as u32;

            let is_valid = time_spent < *message_expiry_interval;

            // ignore expired messages
            if is_valid {
                // set message_expiry_interval to (original value - time spent waiting in server)
                // ref: https://docs.oasis-open.org/mqtt/mqtt/v5.0/os/mqtt-v5.0-os.html#_Toc3901112
                *message_expiry_interval -= time_spent;
            }

            is_valid
        });

        // no need to include timestamp when returning
        self.retained_publishes
            .iter()
            .filter(|(topic, _)| matches(topic, filter))
            .map(|(_, p)| (p.publish.clone(), p.properties.clone()))
            .collect()
    }
}

/// Empties the topic cache when it holds `max` topics (fleetcast): its room is kept, and the
/// topics still published to find their filters again on their next publish.
fn make_room_for_a_topic(publish_filters: &mut HashMap<Topic, Vec<FilterIdx>>, max: usize) {
    if publish_filters.len() >= max {
        publish_filters.clear();
    }
}

/// The filter of a shared subscription's `$share/group/filter` (fleetcast).
fn shared_filter_path(filter: &str) -> Option<&str> {
    filter.strip_prefix("$share/")?.split_once('/').map(|(_, f)| f)
}

pub struct Data<T> {
    filter: Filter,
    pub log: CommitLog<T>,
    /// Sessions, live or saved, subscribed to this filter (fleetcast): none, and appends
    /// are skipped.
    pub holders: usize,
    pub waiters: Waiters<DataRequest>,
    meter: SubscriptionMeter,
}

impl<T> Data<T>
where
    T: Storage + Clone,
{
    pub fn new(filter: &str, router_config: &RouterConfig) -> Data<T> {
        let mut max_segment_size = router_config.max_segment_size;
        let mut max_mem_segments = router_config.max_segment_count;

        // Override segment config for selected filter
        if let Some(config) = &router_config.custom_segment {
            for (f, segment_config) in config {
                if matches(filter, f) {
                    info!("Overriding segment config for filter: {}", filter);
                    max_segment_size = segment_config.max_segment_size;
                    max_mem_segments = segment_config.max_segment_count;
                }
            }
        }

        // max_segment_size: usize, max_mem_segments: usize
        let log = CommitLog::new(max_segment_size, max_mem_segments).unwrap();

        let waiters = Waiters::with_capacity(10);
        let metrics = SubscriptionMeter::default();
        Data {
            filter: filter.to_owned(),
            log,
            holders: 0,
            waiters,
            meter: metrics,
        }
    }

    /// Writes to all the filters that are mapped to this publish topic
    /// and wakes up consumers that are matching this topic (if they exist)
    pub fn append(
        &mut self,
        item: T,
        notifications: &mut VecDeque<(ConnectionId, DataRequest)>,
    ) -> (Offset, &Filter) {
        // Nobody can read it (fleetcast): a new subscription starts at the next offset.
        if self.holders == 0 {
            return (self.log.next_offset(), &self.filter);
        }
        let size = item.size();
        let offset = self.log.append(item);
        if let Some(mut parked) = self.waiters.take() {
            notifications.append(&mut parked);
        }

        self.meter.count += 1;
        self.meter.total_size += size;

        (offset, &self.filter)
    }
}

/// Acks log for a subscription
#[derive(Debug)]
pub struct AckLog {
    // Committed acks per connection. First pkid, last pkid, data
    committed: VecDeque<Ack>,
    // Recorded qos 2 publishes
    recorded: VecDeque<(Publish, Option<PublishProperties>)>,
}

impl AckLog {
    /// New log
    pub fn new() -> AckLog {
        AckLog {
            committed: VecDeque::with_capacity(100),
            recorded: VecDeque::with_capacity(100),
        }
    }

    pub fn connack(&mut self, id: ConnectionId, ack: ConnAck, props: Option<ConnAckProperties>) {
        let ack = Ack::ConnAck(id, ack, props);
        self.committed.push_back(ack);
    }

    pub fn suback(&mut self, ack: SubAck) {
        let ack = Ack::SubAck(ack);
        self.committed.push_back(ack);
    }

    pub fn puback(&mut self, ack: PubAck) {
        let ack = Ack::PubAck(ack);
        self.committed.push_back(ack);
    }

    pub fn pubrec(&mut self, publish: Publish, props: Option<PublishProperties>, ack: PubRec) {
        let ack = Ack::PubRec(ack);
        self.recorded.push_back((publish, props));
        self.committed.push_back(ack);
    }

    pub fn pubrel(&mut self, ack: PubRel) {
        let ack = Ack::PubRel(ack);
        self.committed.push_back(ack);
    }

    pub fn pubcomp(&mut self, ack: PubComp) -> Option<(Publish, Option<PublishProperties>)> {
        let ack = Ack::PubComp(ack);
        self.committed.push_back(ack);
        self.recorded.pop_front()
    }

    pub fn pingresp(&mut self, ack: PingResp) {
        let ack = Ack::PingResp(ack);
        self.committed.push_back(ack);
    }

    pub fn unsuback(&mut self, ack: UnsubAck) {
        let ack = Ack::UnsubAck(ack);
        self.committed.push_back(ack);
    }

    pub fn readv(&mut self) -> &mut VecDeque<Ack> {
        &mut self.committed
    }
}

#[cfg(test)]
mod test {
    use super::DataLog;
    use crate::protocol::Publish;
    use crate::router::shared_subs::Strategy;
    use crate::RouterConfig;
    use bytes::Bytes;
    use std::collections::VecDeque;

    #[test]
    fn publish_filters_updating_correctly_on_new_topic_subscription() {
        let config = RouterConfig {
            max_segment_size: 1024,
            max_connections: 10,
            max_segment_count: 10,
            max_outgoing_packet_count: 1024,
            custom_segment: None,
            initialized_filters: None,
            shared_subscriptions_strategy: Strategy::RoundRobin,
        };
        let mut data = DataLog::new(config).unwrap();
        data.next_native_offset("topic/a");
        data.matches("topic/a");

        data.next_native_offset("topic/+");

        assert_eq!(data.publish_filters.get("topic/a").unwrap().len(), 2);
    }

    #[test]
    fn publish_filters_updating_correctly_on_new_publish() {
        let config = RouterConfig {
            max_segment_size: 1024,
            max_connections: 10,
            max_segment_count: 10,
            max_outgoing_packet_count: 1024,
            custom_segment: None,
            initialized_filters: None,
            shared_subscriptions_strategy: Strategy::RoundRobin,
        };
        let mut data = DataLog::new(config).unwrap();
        data.next_native_offset("+/+");

        data.matches("topic/a");

        assert_eq!(data.publish_filters.get("topic/a").unwrap().len(), 1);
    }

    /// fleetcast: the topic cache holds at most `max_cached_topics` topics, and a topic it
    /// let go still reaches its filters.
    #[test]
    fn the_topic_cache_is_bounded() {
        let config = RouterConfig {
            max_segment_size: 1024,
            max_connections: 10,
            max_segment_count: 10,
            max_outgoing_packet_count: 1024,
            custom_segment: None,
            initialized_filters: None,
            shared_subscriptions_strategy: Strategy::RoundRobin,
        };
        let mut data = DataLog::new(config).unwrap();
        data.max_cached_topics = 100;
        let (idx, _) = data.next_native_offset("drivers/+/location");
        data.hold("drivers/+/location");
        let mut notifications = VecDeque::new();
        for i in 0..1000 {
            let topic = format!("drivers/d{i}/location");
            let publish = Publish::new(Bytes::from(topic.clone()), Bytes::from_static(b"x"), false);
            data.append_matching(publish, None, &mut notifications)
                .unwrap();
            assert!(
                data.publish_filters.len() <= 100,
                "{}",
                data.publish_filters.len()
            );
            assert_eq!(data.matches(&topic), Some(vec![idx]));
        }
        // Every publish reached the filter's log, the ones after a clear included.
        assert_eq!(data.native.get(idx).unwrap().log.next_offset().1, 1000);
    }

    //     #[test]
    //     fn appends_are_written_to_correct_commitlog() {
    //         pretty_env_logger::init();
    //         let config = RouterConfig {
    //             instant_ack: true,
    //             max_segment_size: 1024,
    //             max_connections: 10,
    //             max_mem_segments: 10,
    //             max_disk_segments: 0,
    //             max_read_len: 1024,
    //             log_dir: None,
    //             dynamic_log: true,
    //         };

    //         let mut data = DataLog::new(config).unwrap();
    //         data.next_native_offset("/devices/2321/actions");
    //         for i in 0..2 {
    //             let publish = Publish::new("/devices/2321/events/imu/jsonarray", QoS::AtLeastOnce, vec![1, 2, 3]);
    //             let v = data.native_append(publish);
    //             dbg!(v);
    //         }

    //         for i in 0..2 {
    //             let publish = Publish::new("/devices/2321/actions", QoS::AtLeastOnce, vec![1, 2, 3]);
    //             let v = data.native_append(publish);
    //             dbg!(v);
    //         }
    //     }
}
