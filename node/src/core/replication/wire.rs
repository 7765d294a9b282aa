//! The peer protocol's messages and their frames: `[length u32][version u8][tag u8]
//! [payload]`, big-endian, hand-rolled so a frame's size is known before it is built
//! and garbage is refused with a typed error, never a panic or a huge allocation.
//!
//! Compatibility: `PROTOCOL_VERSION` is in every frame. A change of any message's
//! layout bumps it, keeps a decoder for the previous version, and adds a test that
//! decodes a frame of the previous version.
//!
//! Version 2 added each probe's `floor` (what the sender claims for the shard). A
//! version-1 frame still decodes, its probes with no floor (no claim); a version-1
//! node refuses version-2 frames, so it replicates nothing from an upgraded sibling
//! until it is upgraded too (nothing is lost meanwhile: marks and repair resume).

use bytes::Bytes;

use super::fingerprint::{Fingerprint, HashRange};
use super::item::{Item, RecordKey, ShardId, Table};
use super::log::LogMark;
use super::store::Summary;
use crate::core::hlc::Timestamp;
use crate::core::model::{NodeId, Version};

pub const PROTOCOL_VERSION: u8 = 2;
/// The previous version, still decoded (its probes carry no floor).
const PROTOCOL_VERSION_1: u8 = 1;
/// Length prefix, version byte, tag byte.
pub const FRAME_HEADER_BYTES: usize = 6;

/// First message of a session, both ways; sent again until the peer's arrives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hello {
    /// The sender's current log epoch and newest seq (the receiver can show how far
    /// behind it is).
    pub epoch: u64,
    pub log_end: u64,
    /// How far the sender has applied each origin's log: the receiver resumes its own
    /// stream from its entry here.
    pub marks: Vec<(NodeId, LogMark)>,
    /// The sender's completeness horizon (see `replication` invariants).
    pub complete: Timestamp,
    /// Set while the sender has not had the receiver's Hello of this session.
    pub reply_wanted: bool,
}

/// Entries `after_seq + 1 ..= through_seq` of the sender's log, as the records they
/// name at their current version; entries for shards the receiver does not hold, and
/// records purged since, are skipped but still covered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogBatch {
    pub epoch: u64,
    pub after_seq: u64,
    pub through_seq: u64,
    /// Every write of the sender (to the receiver's shards) with `at <= clock` is in
    /// seqs `<= through_seq`.
    pub clock: Timestamp,
    /// The sender's completeness horizon when it sent this; a receiver whose purge
    /// floor is past it drops the batch as stale.
    pub complete: Timestamp,
    pub items: Vec<Item>,
}

/// "I have applied your log through `seq` of `epoch`."
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogAck {
    pub epoch: u64,
    pub seq: u64,
    pub complete: Timestamp,
}

/// One range of one shard in range-based set reconciliation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    pub shard: ShardId,
    pub range: HashRange,
    /// The sender's floor of the shard when it made the probe, `None` when it claims
    /// none: every write to the shard older than this that the sender does not hold
    /// was deleted and its tombstone collected everywhere. On `Summaries` it is set
    /// only when the list is the whole range (see `ReplicaNode::on_repair`).
    pub floor: Option<Timestamp>,
    pub body: ProbeBody,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProbeBody {
    /// "This is what I hold in the range": equal means done, else split or list.
    Fingerprint(Fingerprint),
    /// "These are all the records I hold in the range": the receiver pushes what is
    /// newer on its side and asks for what is newer on the sender's.
    Summaries(Vec<Summary>),
}

/// Records the sender holds, for repair (pushed, or asked for by `Want`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Items {
    /// As in `LogBatch`: a receiver whose purge floor is past it drops the message.
    pub complete: Timestamp,
    pub items: Vec<Item>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wanted {
    pub shard: ShardId,
    pub key: RecordKey,
}

/// Everything one sibling says to another.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    Hello(Hello),
    LogBatch(LogBatch),
    LogAck(LogAck),
    Repair(Vec<Probe>),
    Items(Items),
    Want(Vec<Wanted>),
}

impl Message {
    /// The size of the message's frame, exactly.
    pub fn frame_bytes(&self) -> usize {
        let mut counter = Counter(0);
        encode_payload(self, &mut counter);
        FRAME_HEADER_BYTES + counter.0
    }

    fn tag(&self) -> u8 {
        match self {
            Message::Hello(_) => 1,
            Message::LogBatch(_) => 2,
            Message::LogAck(_) => 3,
            Message::Repair(_) => 4,
            Message::Items(_) => 5,
            Message::Want(_) => 6,
        }
    }
}

/// Bytes one item adds to a `LogBatch` or `Items` message.
pub fn item_bytes(item: &Item) -> usize {
    let mut counter = Counter(0);
    put_item(&mut counter, item);
    counter.0
}

pub fn probe_bytes(probe: &Probe) -> usize {
    let mut counter = Counter(0);
    put_probe(&mut counter, probe);
    counter.0
}

pub fn wanted_bytes(wanted: &Wanted) -> usize {
    let mut counter = Counter(0);
    put_wanted(&mut counter, wanted);
    counter.0
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    #[error(
        "message needs a {frame_bytes}-byte frame, over the {frame_bytes_max}-byte limit; send it in smaller batches"
    )]
    FrameTooLarge { frame_bytes: usize, frame_bytes_max: usize },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("peer sent a {frame_bytes}-byte frame, over the {frame_bytes_max}-byte limit; close the session")]
    FrameTooLarge { frame_bytes: u64, frame_bytes_max: usize },
    #[error("peer speaks protocol version {0}, this node speaks {PROTOCOL_VERSION}; upgrade the older node")]
    UnsupportedVersion(u8),
    #[error("unknown message tag {0}")]
    UnknownTag(u8),
    #[error("malformed frame: {0}")]
    Malformed(&'static str),
}

/// One whole frame for `message`.
pub fn encode(message: &Message, frame_bytes_max: usize) -> Result<Vec<u8>, EncodeError> {
    let frame_bytes = message.frame_bytes();
    if frame_bytes > frame_bytes_max || frame_bytes - 4 > u32::MAX as usize {
        return Err(EncodeError::FrameTooLarge { frame_bytes, frame_bytes_max });
    }
    let mut frame = Vec::with_capacity(frame_bytes);
    frame.extend_from_slice(&((frame_bytes - 4) as u32).to_be_bytes());
    frame.push(PROTOCOL_VERSION);
    frame.push(message.tag());
    encode_payload(message, &mut frame);
    debug_assert_eq!(frame.len(), frame_bytes);
    Ok(frame)
}

/// Reads the frame at the start of `buffer`: `Ok(None)` when more bytes are needed,
/// else the message and the bytes it used. An oversize length prefix is refused
/// before its frame arrives.
pub fn decode(buffer: &[u8], frame_bytes_max: usize) -> Result<Option<(Message, usize)>, DecodeError> {
    let Some(prefix) = buffer.get(..4) else { return Ok(None) };
    let length = u32::from_be_bytes(prefix.try_into().expect("four bytes")) as u64;
    let frame_bytes = length + 4;
    if frame_bytes > frame_bytes_max as u64 {
        return Err(DecodeError::FrameTooLarge { frame_bytes, frame_bytes_max });
    }
    let frame_bytes = frame_bytes as usize;
    if frame_bytes < FRAME_HEADER_BYTES {
        return Err(DecodeError::Malformed("frame shorter than its header"));
    }
    let Some(frame) = buffer.get(..frame_bytes) else { return Ok(None) };
    if frame[4] != PROTOCOL_VERSION && frame[4] != PROTOCOL_VERSION_1 {
        return Err(DecodeError::UnsupportedVersion(frame[4]));
    }
    let mut reader = Reader { rest: &frame[FRAME_HEADER_BYTES..], probes_have_floors: frame[4] >= 2 };
    let message = match frame[5] {
        1 => Message::Hello(Hello {
            epoch: reader.u64()?,
            log_end: reader.u64()?,
            complete: Timestamp(reader.u64()?),
            reply_wanted: reader.bool()?,
            marks: reader.list(8 + 24, |reader| Ok((NodeId(reader.u64()?), reader.mark()?)))?,
        }),
        2 => Message::LogBatch(LogBatch {
            epoch: reader.u64()?,
            after_seq: reader.u64()?,
            through_seq: reader.u64()?,
            clock: Timestamp(reader.u64()?),
            complete: Timestamp(reader.u64()?),
            items: reader.list(ITEM_BYTES_MIN, Reader::item)?,
        }),
        3 => Message::LogAck(LogAck { epoch: reader.u64()?, seq: reader.u64()?, complete: Timestamp(reader.u64()?) }),
        4 => Message::Repair(reader.list(PROBE_BYTES_MIN, Reader::probe)?),
        5 => Message::Items(Items {
            complete: Timestamp(reader.u64()?),
            items: reader.list(ITEM_BYTES_MIN, Reader::item)?,
        }),
        6 => Message::Want(
            reader.list(2 * 4 + 1, |reader| Ok(Wanted { shard: ShardId(reader.string()?), key: reader.key()? }))?,
        ),
        tag => return Err(DecodeError::UnknownTag(tag)),
    };
    if !reader.rest.is_empty() {
        return Err(DecodeError::Malformed("bytes after the message"));
    }
    if let Message::LogBatch(batch) = &message {
        if batch.through_seq < batch.after_seq {
            return Err(DecodeError::Malformed("log batch ends before it starts"));
        }
    }
    Ok(Some((message, frame_bytes)))
}

/// Smallest encodings, to refuse a list count the frame cannot hold before allocating.
const ITEM_BYTES_MIN: usize = 4 + 1 + 4 + 16 + 1;
const PROBE_BYTES_MIN: usize = 4 + 9 + 1 + 4;

trait Sink {
    fn put(&mut self, bytes: &[u8]);
}

impl Sink for Vec<u8> {
    fn put(&mut self, bytes: &[u8]) {
        self.extend_from_slice(bytes);
    }
}

/// Counts what would be written: sizes come from the same code as the bytes.
struct Counter(usize);

impl Sink for Counter {
    fn put(&mut self, bytes: &[u8]) {
        self.0 += bytes.len();
    }
}

fn put_u64(sink: &mut impl Sink, value: u64) {
    sink.put(&value.to_be_bytes());
}

fn put_len(sink: &mut impl Sink, length: usize) {
    sink.put(&(length as u32).to_be_bytes());
}

fn put_bytes(sink: &mut impl Sink, bytes: &[u8]) {
    put_len(sink, bytes.len());
    sink.put(bytes);
}

fn put_key(sink: &mut impl Sink, key: &RecordKey) {
    sink.put(&[key.table.code()]);
    put_bytes(sink, key.key.as_bytes());
}

fn put_version(sink: &mut impl Sink, version: Version) {
    put_u64(sink, version.at.0);
    put_u64(sink, version.origin.0);
}

fn put_item(sink: &mut impl Sink, item: &Item) {
    put_bytes(sink, item.shard.0.as_bytes());
    put_key(sink, &item.key);
    put_version(sink, item.version);
    match &item.body {
        Some(body) => {
            sink.put(&[1]);
            put_bytes(sink, body);
        }
        None => sink.put(&[0]),
    }
}

fn put_probe(sink: &mut impl Sink, probe: &Probe) {
    put_bytes(sink, probe.shard.0.as_bytes());
    sink.put(&[probe.range.depth()]);
    put_u64(sink, probe.range.start());
    match probe.floor {
        Some(floor) => {
            sink.put(&[1]);
            put_u64(sink, floor.0);
        }
        None => sink.put(&[0]),
    }
    match &probe.body {
        ProbeBody::Fingerprint(fingerprint) => {
            sink.put(&[1]);
            put_u64(sink, fingerprint.sum);
            put_u64(sink, fingerprint.count);
        }
        ProbeBody::Summaries(summaries) => {
            sink.put(&[2]);
            put_len(sink, summaries.len());
            for summary in summaries {
                put_key(sink, &summary.key);
                put_version(sink, summary.version);
            }
        }
    }
}

fn put_wanted(sink: &mut impl Sink, wanted: &Wanted) {
    put_bytes(sink, wanted.shard.0.as_bytes());
    put_key(sink, &wanted.key);
}

fn encode_payload(message: &Message, sink: &mut impl Sink) {
    match message {
        Message::Hello(hello) => {
            put_u64(sink, hello.epoch);
            put_u64(sink, hello.log_end);
            put_u64(sink, hello.complete.0);
            sink.put(&[u8::from(hello.reply_wanted)]);
            put_len(sink, hello.marks.len());
            for (origin, mark) in &hello.marks {
                put_u64(sink, origin.0);
                put_u64(sink, mark.epoch);
                put_u64(sink, mark.seq);
                put_u64(sink, mark.clock.0);
            }
        }
        Message::LogBatch(batch) => {
            put_u64(sink, batch.epoch);
            put_u64(sink, batch.after_seq);
            put_u64(sink, batch.through_seq);
            put_u64(sink, batch.clock.0);
            put_u64(sink, batch.complete.0);
            put_len(sink, batch.items.len());
            batch.items.iter().for_each(|item| put_item(sink, item));
        }
        Message::LogAck(ack) => {
            put_u64(sink, ack.epoch);
            put_u64(sink, ack.seq);
            put_u64(sink, ack.complete.0);
        }
        Message::Repair(probes) => {
            put_len(sink, probes.len());
            probes.iter().for_each(|probe| put_probe(sink, probe));
        }
        Message::Items(items) => {
            put_u64(sink, items.complete.0);
            put_len(sink, items.items.len());
            items.items.iter().for_each(|item| put_item(sink, item));
        }
        Message::Want(wanted) => {
            put_len(sink, wanted.len());
            wanted.iter().for_each(|wanted| put_wanted(sink, wanted));
        }
    }
}

struct Reader<'a> {
    rest: &'a [u8],
    /// Version 2 and later: probes carry the sender's floor.
    probes_have_floors: bool,
}

impl<'a> Reader<'a> {
    fn take(&mut self, count: usize) -> Result<&'a [u8], DecodeError> {
        if self.rest.len() < count {
            return Err(DecodeError::Malformed("frame ends inside a field"));
        }
        let (taken, rest) = self.rest.split_at(count);
        self.rest = rest;
        Ok(taken)
    }

    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }

    fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_be_bytes(self.take(4)?.try_into().expect("four bytes")))
    }

    fn u64(&mut self) -> Result<u64, DecodeError> {
        Ok(u64::from_be_bytes(self.take(8)?.try_into().expect("eight bytes")))
    }

    fn bool(&mut self) -> Result<bool, DecodeError> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(DecodeError::Malformed("flag is neither 0 nor 1")),
        }
    }

    fn bytes(&mut self) -> Result<&'a [u8], DecodeError> {
        let length = self.u32()? as usize;
        self.take(length)
    }

    fn string(&mut self) -> Result<String, DecodeError> {
        let bytes = self.bytes()?;
        std::str::from_utf8(bytes).map(str::to_owned).map_err(|_| DecodeError::Malformed("text is not UTF-8"))
    }

    /// A count-prefixed list; a count the rest of the frame cannot hold is refused
    /// before anything is allocated for it.
    fn list<T>(
        &mut self,
        element_bytes_min: usize,
        mut read: impl FnMut(&mut Self) -> Result<T, DecodeError>,
    ) -> Result<Vec<T>, DecodeError> {
        let count = self.u32()? as usize;
        if count > self.rest.len() / element_bytes_min {
            return Err(DecodeError::Malformed("list longer than the frame"));
        }
        let mut list = Vec::with_capacity(count);
        for _ in 0..count {
            list.push(read(self)?);
        }
        Ok(list)
    }

    fn key(&mut self) -> Result<RecordKey, DecodeError> {
        let table = Table::from_code(self.u8()?).ok_or(DecodeError::Malformed("unknown table"))?;
        Ok(RecordKey { table, key: self.string()? })
    }

    fn version(&mut self) -> Result<Version, DecodeError> {
        Ok(Version { at: Timestamp(self.u64()?), origin: NodeId(self.u64()?) })
    }

    fn mark(&mut self) -> Result<LogMark, DecodeError> {
        Ok(LogMark { epoch: self.u64()?, seq: self.u64()?, clock: Timestamp(self.u64()?) })
    }

    fn item(&mut self) -> Result<Item, DecodeError> {
        let shard = ShardId(self.string()?);
        let key = self.key()?;
        let version = self.version()?;
        let body = if self.bool()? { Some(Bytes::copy_from_slice(self.bytes()?)) } else { None };
        Ok(Item { shard, key, version, body })
    }

    fn probe(&mut self) -> Result<Probe, DecodeError> {
        let shard = ShardId(self.string()?);
        let depth = self.u8()?;
        let range = HashRange::new(depth, self.u64()?).ok_or(DecodeError::Malformed("range is not aligned"))?;
        let floor = if self.probes_have_floors && self.bool()? { Some(Timestamp(self.u64()?)) } else { None };
        let body = match self.u8()? {
            1 => ProbeBody::Fingerprint(Fingerprint { sum: self.u64()?, count: self.u64()? }),
            2 => ProbeBody::Summaries(
                self.list(1 + 4 + 16, |reader| Ok(Summary { key: reader.key()?, version: reader.version()? }))?,
            ),
            _ => return Err(DecodeError::Malformed("unknown probe kind")),
        };
        Ok(Probe { shard, range, floor, body })
    }
}

/// A comment record of shard `00ab`, live with `body` or a tombstone.
fn example_item(body: Option<&'static str>) -> Item {
    Item {
        shard: ShardId("00ab".into()),
        key: RecordKey::new(Table::Comment, "p1/c1"),
        version: Version { at: Timestamp(1 << 40), origin: NodeId(0xfeed) },
        body: body.map(|text| Bytes::from_static(text.as_bytes())),
    }
}

/// One message of each kind, with every field set: for round-trip tests and the fuzz
/// targets' seeds (`fuzz/make_seeds.rs`).
pub fn example_messages() -> Vec<Message> {
    let item = example_item;
    vec![
        Message::Hello(Hello {
            epoch: 3,
            log_end: 99,
            marks: vec![(NodeId(1), LogMark { epoch: 2, seq: 5, clock: Timestamp(77) })],
            complete: Timestamp(70),
            reply_wanted: true,
        }),
        Message::LogBatch(LogBatch {
            epoch: 3,
            after_seq: 10,
            through_seq: 12,
            clock: Timestamp(1234),
            complete: Timestamp(1000),
            items: vec![item(Some("{\"text\":\"hi\"}")), item(None)],
        }),
        Message::LogAck(LogAck { epoch: 3, seq: 12, complete: Timestamp(5) }),
        Message::Repair(vec![
            Probe {
                shard: ShardId("00ab".into()),
                range: HashRange::ALL,
                floor: Some(Timestamp(60)),
                body: ProbeBody::Fingerprint(Fingerprint { sum: 42, count: 3 }),
            },
            Probe {
                shard: ShardId("00ab".into()),
                range: HashRange::new(8, 0xab << 56).expect("an aligned range"),
                floor: None,
                body: ProbeBody::Summaries(vec![Summary {
                    key: RecordKey::new(Table::Like, "p1/u2"),
                    version: Version { at: Timestamp(8), origin: NodeId(2) },
                }]),
            },
        ]),
        Message::Items(Items { complete: Timestamp(9), items: vec![item(Some("x"))] }),
        Message::Want(vec![Wanted { shard: ShardId("00ab".into()), key: RecordKey::new(Table::User, "") }]),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::sim::Rng;

    const FRAME_BYTES_MAX: usize = 64 * 1024;

    #[test]
    fn every_message_round_trips_and_knows_its_size() {
        for message in example_messages() {
            let frame = encode(&message, FRAME_BYTES_MAX).unwrap();
            assert_eq!(frame.len(), message.frame_bytes());
            assert_eq!(decode(&frame, FRAME_BYTES_MAX).unwrap(), Some((message.clone(), frame.len())));
            // Any strict prefix asks for more bytes or, inside the header, is refused.
            for cut in 0..frame.len() {
                assert_eq!(decode(&frame[..cut], FRAME_BYTES_MAX), Ok(None), "{message:?} cut at {cut}");
            }
        }
    }

    #[test]
    fn a_version_1_repair_frame_decodes_with_no_floor() {
        // Written out by hand as version 1 laid it: one whole-range fingerprint probe.
        let mut payload = vec![4u8];
        payload.extend_from_slice(&1u32.to_be_bytes());
        payload.extend_from_slice(&4u32.to_be_bytes());
        payload.extend_from_slice(b"00ab");
        payload.push(0);
        payload.extend_from_slice(&0u64.to_be_bytes());
        payload.push(1);
        payload.extend_from_slice(&42u64.to_be_bytes());
        payload.extend_from_slice(&3u64.to_be_bytes());
        let mut frame = ((payload.len() + 1) as u32).to_be_bytes().to_vec();
        frame.push(PROTOCOL_VERSION_1);
        frame.extend_from_slice(&payload);
        let expected = Message::Repair(vec![Probe {
            shard: ShardId("00ab".into()),
            range: HashRange::ALL,
            floor: None,
            body: ProbeBody::Fingerprint(Fingerprint { sum: 42, count: 3 }),
        }]);
        assert_eq!(decode(&frame, FRAME_BYTES_MAX), Ok(Some((expected, frame.len()))));
    }

    #[test]
    fn oversize_frames_are_refused_both_ways() {
        let big = Message::Items(Items { complete: Timestamp(0), items: vec![example_item(Some("x")); 1000] });
        assert!(matches!(encode(&big, 1024), Err(EncodeError::FrameTooLarge { .. })));
        let frame = encode(&big, usize::MAX).unwrap();
        // Refused from the length prefix alone, before the rest arrives.
        assert!(matches!(decode(&frame[..4], 1024), Err(DecodeError::FrameTooLarge { .. })));
    }

    #[test]
    fn garbage_is_refused_with_typed_errors() {
        let mut frame = encode(&Message::LogAck(LogAck { epoch: 1, seq: 2, complete: Timestamp(3) }), 1024).unwrap();
        frame[4] = 9;
        assert_eq!(decode(&frame, 1024), Err(DecodeError::UnsupportedVersion(9)));
        frame[4] = PROTOCOL_VERSION;
        frame[5] = 200;
        assert_eq!(decode(&frame, 1024), Err(DecodeError::UnknownTag(200)));
        // A list claiming four billion elements in a tiny frame allocates nothing.
        let lying = [0, 0, 0, 6, PROTOCOL_VERSION, 4, 0xff, 0xff, 0xff, 0xff];
        assert_eq!(decode(&lying, 1024), Err(DecodeError::Malformed("list longer than the frame")));
        assert_eq!(decode(&[0, 0, 0, 1, 1], 1024), Err(DecodeError::Malformed("frame shorter than its header")));
    }

    #[test]
    fn random_and_mutated_bytes_never_panic_the_decoder() {
        let mut rng = Rng::new(0x5eed);
        let valid: Vec<Vec<u8>> =
            example_messages().iter().map(|message| encode(message, FRAME_BYTES_MAX).unwrap()).collect();
        for round in 0..20_000 {
            let buffer: Vec<u8> = if round % 2 == 0 {
                let length = rng.below(64) as usize;
                let mut buffer: Vec<u8> = (0..length).map(|_| rng.next_u64() as u8).collect();
                if buffer.len() >= 6 && rng.chance(0.8) {
                    // Mostly plausible headers, so the payload parsers get exercised.
                    let length = (buffer.len() - 4) as u32;
                    buffer[..4].copy_from_slice(&length.to_be_bytes());
                    buffer[4] = PROTOCOL_VERSION;
                    buffer[5] = 1 + rng.below(6) as u8;
                }
                buffer
            } else {
                let mut buffer = valid[rng.below(valid.len() as u64) as usize].clone();
                for _ in 0..1 + rng.below(4) {
                    let at = 4 + rng.below(buffer.len() as u64 - 4) as usize;
                    buffer[at] = rng.next_u64() as u8;
                }
                buffer
            };
            // Whatever comes back, it came back.
            let _ = decode(&buffer, FRAME_BYTES_MAX);
        }
    }
}
