//! The gRPC services: `Streams` (read, subscribe, append, tombstone) and `ServerFeatures`,
//! answering as KurrentDB does on the wire (the same messages, status codes and `exception`
//! metadata the clients decode).

// tonic's handlers answer `Status` by value; boxing it in the helpers only to unbox it at the
// trait boundary would buy nothing in a test double.
#![allow(clippy::result_large_err)]

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use futures::{Stream, StreamExt};
use prost::bytes::Bytes;
use regex::Regex;
use tokio::sync::{mpsc, watch};
use tonic::metadata::MetadataMap;
use tonic::{Code, Request, Response, Status, Streaming};
use uuid::Uuid;

use crate::log::{Appended, Expected, Log, Proposed, Record, Refused};
use crate::proto::event_store::client::server_features::{
    SupportedMethod, SupportedMethods, server_features_server::ServerFeatures,
};
use crate::proto::event_store::client::streams::{
    self as pb, AppendReq, AppendResp, BatchAppendReq, BatchAppendResp, DeleteReq, DeleteResp,
    ReadReq, ReadResp, TombstoneReq, TombstoneResp, streams_server::Streams,
};
use crate::proto::event_store::client::{self as shared, StreamIdentifier};

/// Records a subscription sends per look at the log.
const SUBSCRIPTION_PAGE: usize = 256;

/// A subscriber this many records behind the end of the log is told it "fell behind" (and
/// "caught up" when it reaches the end). GUESS: the real server's threshold is its live
/// buffer size; only the messages matter to a client.
const FELL_BEHIND: usize = 1_000;

/// Records scanned by a filtered subscription between two checkpoint messages. GUESS: the
/// server sends one per `window × checkpointIntervalMultiplier` records scanned.
const CHECKPOINT_EVERY: usize = 32;

/// What every handler shares.
pub(crate) struct State {
    pub(crate) log: Mutex<Log>,
    /// The number of records, published after each write (subscriptions wait on it).
    pub(crate) written: watch::Sender<usize>,
    /// Bumped to cut every open subscription (a dropped connection, for tests).
    pub(crate) cut: watch::Sender<u64>,
}

impl State {
    fn lock(&self) -> Result<std::sync::MutexGuard<'_, Log>, Status> {
        self.log.lock().map_err(|_| Status::internal("the double's log lock is poisoned"))
    }
}

#[derive(Clone)]
pub(crate) struct Service(pub(crate) Arc<State>);

fn now_ticks() -> i64 {
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    i64::try_from(nanos / 100).unwrap_or(i64::MAX)
}

/// A status with KurrentDB's `exception` metadata (the key every client reads).
fn exception(code: Code, message: String, name: &str, extra: &[(&'static str, String)]) -> Status {
    let mut metadata = MetadataMap::new();
    if let Ok(v) = name.parse() {
        metadata.insert("exception", v);
    }
    for (key, value) in extra {
        if let Ok(v) = value.parse() {
            metadata.insert(*key, v);
        }
    }
    Status::with_metadata(code, message, metadata)
}

fn stream_deleted(stream: &str) -> Status {
    exception(
        Code::FailedPrecondition,
        format!("Event stream '{stream}' is deleted."),
        "stream-deleted",
        &[("stream-name", stream.to_owned())],
    )
}

fn refused(stream: &str, why: Refused) -> Status {
    match why {
        Refused::StreamDeleted => stream_deleted(stream),
        Refused::MaxAppendSize { max } => exception(
            Code::InvalidArgument,
            format!("Maximum Append Size of {max} Exceeded."),
            "maximum-append-size-exceeded",
            &[("maximum-append-size", max.to_string())],
        ),
        Refused::WrongExpectedVersion { current, expected } => exception(
            Code::FailedPrecondition,
            format!(
                "Append failed due to WrongExpectedVersion. Stream: {stream}, Expected version: \
                 {expected:?}, Actual version: {current:?}"
            ),
            "wrong-expected-version",
            &[
                ("stream-name", stream.to_owned()),
                ("expected-version", format!("{expected:?}")),
                ("actual-version", current.map_or("-1".to_owned(), |c| c.to_string())),
            ],
        ),
    }
}

fn stream_name(id: Option<StreamIdentifier>) -> Result<String, Status> {
    let id = id.ok_or_else(|| Status::invalid_argument("no stream identifier"))?;
    String::from_utf8(id.stream_name.to_vec())
        .map_err(|_| Status::invalid_argument("the stream name is not UTF-8"))
}

fn uuid_from(id: Option<shared::Uuid>) -> Result<Uuid, Status> {
    match id.and_then(|u| u.value) {
        Some(shared::uuid::Value::Structured(s)) => {
            let value = ((s.most_significant_bits as u64 as u128) << 64)
                | (s.least_significant_bits as u64 as u128);
            Ok(Uuid::from_u128(value))
        }
        Some(shared::uuid::Value::String(s)) => {
            s.parse().map_err(|_| Status::invalid_argument("an event id is not a uuid"))
        }
        None => Err(Status::invalid_argument("an event has no id")),
    }
}

fn uuid_to(id: Uuid, structured: bool) -> shared::Uuid {
    let value = if structured {
        let v = id.as_u128();
        shared::uuid::Value::Structured(shared::uuid::Structured {
            most_significant_bits: (v >> 64) as u64 as i64,
            least_significant_bits: v as u64 as i64,
        })
    } else {
        shared::uuid::Value::String(id.to_string())
    };
    shared::Uuid { value: Some(value) }
}

fn read_event(r: &Record, structured: bool) -> ReadResp {
    let metadata = [
        ("type".to_owned(), r.event_type.clone()),
        ("content-type".to_owned(), r.content_type.clone()),
        ("created".to_owned(), r.created.to_string()),
    ]
    .into_iter()
    .collect();
    ReadResp {
        content: Some(pb::read_resp::Content::Event(pb::read_resp::ReadEvent {
            event: Some(pb::read_resp::read_event::RecordedEvent {
                id: Some(uuid_to(r.id, structured)),
                stream_identifier: Some(StreamIdentifier {
                    stream_name: Bytes::copy_from_slice(r.stream.as_bytes()),
                }),
                stream_revision: r.revision,
                prepare_position: r.prepare,
                commit_position: r.commit,
                metadata,
                custom_metadata: r.custom_metadata.clone(),
                data: r.data.clone(),
            }),
            link: None,
            position: Some(pb::read_resp::read_event::Position::CommitPosition(r.commit)),
        })),
    }
}

/// The `$all` filter of a read or subscription.
struct Filter {
    on_stream: bool,
    regex: Option<Regex>,
    prefixes: Vec<String>,
}

impl Filter {
    fn from(option: Option<pb::read_req::options::FilterOption>) -> Result<Option<Filter>, Status> {
        use pb::read_req::options::{FilterOption, filter_options::Filter as Kind};
        let Some(FilterOption::Filter(f)) = option else { return Ok(None) };
        let (on_stream, expr) = match f.filter {
            Some(Kind::StreamIdentifier(e)) => (true, e),
            Some(Kind::EventType(e)) => (false, e),
            None => return Ok(None),
        };
        let regex = if expr.regex.is_empty() {
            None
        } else {
            Some(Regex::new(&expr.regex).map_err(|e| Status::invalid_argument(e.to_string()))?)
        };
        Ok(Some(Filter { on_stream, regex, prefixes: expr.prefix }))
    }

    fn admits(&self, r: &Record) -> bool {
        let subject = if self.on_stream { &*r.stream } else { r.event_type.as_str() };
        if !self.prefixes.is_empty() {
            return self.prefixes.iter().any(|p| subject.starts_with(p.as_str()));
        }
        self.regex.as_ref().is_none_or(|re| re.is_match(subject))
    }
}

type ReadStream = Pin<Box<dyn Stream<Item = Result<ReadResp, Status>> + Send>>;

fn once_stream(items: Vec<Result<ReadResp, Status>>) -> ReadStream {
    futures::stream::iter(items).boxed()
}

fn receiver_stream(rx: mpsc::Receiver<Result<ReadResp, Status>>) -> ReadStream {
    futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|item| (item, rx)) })
        .boxed()
}

fn position_of(p: &pb::read_req::options::Position) -> (u64, u64) {
    (p.commit_position, p.prepare_position)
}

impl Service {
    fn read_stream(
        &self,
        options: pb::read_req::options::StreamOptions,
        backwards: bool,
        count: u64,
        structured: bool,
    ) -> Result<Vec<Result<ReadResp, Status>>, Status> {
        use pb::read_req::options::stream_options::RevisionOption;
        let name = stream_name(options.stream_identifier)?;
        let log = self.0.lock()?;
        let records = match log.stream(&name) {
            Err(_) => return Err(stream_deleted(&name)),
            Ok(None) => {
                return Ok(vec![Ok(ReadResp {
                    content: Some(pb::read_resp::Content::StreamNotFound(
                        pb::read_resp::StreamNotFound {
                            stream_identifier: Some(StreamIdentifier {
                                stream_name: Bytes::from(name.into_bytes()),
                            }),
                        },
                    )),
                })]);
            }
            Ok(Some(records)) => records,
        };
        let last = records.len() as u64 - 1;
        let count = usize::try_from(count).unwrap_or(usize::MAX);
        let picked: Vec<&Record> = match (options.revision_option, backwards) {
            (Some(RevisionOption::Revision(r)), false) => records
                .iter()
                .skip(usize::try_from(r).unwrap_or(usize::MAX))
                .take(count)
                .copied()
                .collect(),
            (Some(RevisionOption::Start(_)) | None, false) => {
                records.iter().take(count).copied().collect()
            }
            (Some(RevisionOption::End(_)), false) => Vec::new(),
            // GUESS: backwards from past the end starts at the last event (pop copes with
            // either answer).
            (Some(RevisionOption::Revision(r)), true) => {
                let from = r.min(last) as usize;
                records[..=from].iter().rev().take(count).copied().collect()
            }
            (Some(RevisionOption::End(_)) | None, true) => {
                records.iter().rev().take(count).copied().collect()
            }
            (Some(RevisionOption::Start(_)), true) => {
                records.iter().take(1.min(count)).copied().collect()
            }
        };
        Ok(picked.into_iter().map(|r| Ok(read_event(r, structured))).collect())
    }

    /// GUESS (KurrentDB docs, *Reading events*: "read from a position"): forwards reads of
    /// `$all` include the record at the position they start from; backwards reads start
    /// before it. Pop copes with either.
    fn read_all(
        &self,
        options: pb::read_req::options::AllOptions,
        backwards: bool,
        count: u64,
        filter: Option<&Filter>,
        structured: bool,
    ) -> Result<Vec<Result<ReadResp, Status>>, Status> {
        use pb::read_req::options::all_options::AllOption;
        let log = self.0.lock()?;
        let records = log.records();
        let count = usize::try_from(count).unwrap_or(usize::MAX);
        let admits = |r: &&Record| filter.is_none_or(|f| f.admits(r));
        let picked: Vec<&Record> = match (options.all_option, backwards) {
            (Some(AllOption::Position(p)), false) => records[log.index_from(position_of(&p))..]
                .iter()
                .filter(admits)
                .take(count)
                .collect(),
            (Some(AllOption::Start(_)) | None, false) => {
                records.iter().filter(admits).take(count).collect()
            }
            (Some(AllOption::End(_)), false) => Vec::new(),
            (Some(AllOption::Position(p)), true) => records[..log.index_from(position_of(&p))]
                .iter()
                .rev()
                .filter(admits)
                .take(count)
                .collect(),
            (Some(AllOption::End(_)) | None, true) => {
                records.iter().rev().filter(admits).take(count).collect()
            }
            (Some(AllOption::Start(_)), true) => Vec::new(),
        };
        Ok(picked.into_iter().map(|r| Ok(read_event(r, structured))).collect())
    }

    /// A catch-up subscription to `$all`. GUESS (KurrentDB docs, *Catch-up subscriptions*:
    /// "subscribe from a position … receives the events after it"): a subscription from a
    /// position starts after it. It sends a confirmation, then the stored records, then each
    /// new one; "fell behind", "caught up" and filter checkpoints along the way.
    fn subscribe_all(
        &self,
        options: pb::read_req::options::AllOptions,
        filter: Option<Filter>,
        structured: bool,
    ) -> Result<ReadStream, Status> {
        use pb::read_req::options::all_options::AllOption;
        let state = Arc::clone(&self.0);
        let mut cursor = {
            let log = state.lock()?;
            match options.all_option {
                Some(AllOption::Start(_)) | None => 0,
                Some(AllOption::End(_)) => log.records().len(),
                Some(AllOption::Position(p)) => {
                    let at = log.index_from(position_of(&p));
                    let exact =
                        log.records().get(at).is_some_and(|r| r.position() == position_of(&p));
                    if exact { at + 1 } else { at }
                }
            }
        };
        let (tx, rx) = mpsc::channel(SUBSCRIPTION_PAGE);
        let mut written = state.written.subscribe();
        let mut cut = state.cut.subscribe();
        tokio::spawn(async move {
            let confirmation = ReadResp {
                content: Some(pb::read_resp::Content::Confirmation(
                    pb::read_resp::SubscriptionConfirmation {
                        subscription_id: Uuid::new_v4().to_string(),
                    },
                )),
            };
            if tx.send(Ok(confirmation)).await.is_err() {
                return;
            }
            let mut live = false;
            let mut scanned = 0usize;
            loop {
                if cut.has_changed().unwrap_or(true) {
                    let _ = tx.send(Err(Status::unavailable("connection cut by the double"))).await;
                    return;
                }
                let (page, end, behind) = {
                    let Ok(log) = state.log.lock() else { return };
                    let records = log.records();
                    let end = (cursor + SUBSCRIPTION_PAGE).min(records.len());
                    let mut page = Vec::new();
                    for r in &records[cursor..end] {
                        scanned += 1;
                        if filter.as_ref().is_none_or(|f| f.admits(r)) {
                            page.push(Ok(read_event(r, structured)));
                        } else if filter.is_some() && scanned.is_multiple_of(CHECKPOINT_EVERY) {
                            page.push(Ok(checkpoint(r)));
                        }
                    }
                    (page, end, records.len() - end)
                };
                cursor = end;
                if live && behind > FELL_BEHIND {
                    live = false;
                    if tx.send(Ok(notice(false))).await.is_err() {
                        return;
                    }
                }
                for item in page {
                    if tx.send(item).await.is_err() {
                        return;
                    }
                }
                if behind > 0 {
                    continue;
                }
                if !live {
                    live = true;
                    if tx.send(Ok(notice(true))).await.is_err() {
                        return;
                    }
                }
                tokio::select! {
                    changed = written.changed() => if changed.is_err() { return },
                    _ = cut.changed() => {}
                    () = tx.closed() => return,
                }
            }
        });
        Ok(receiver_stream(rx))
    }
}

fn checkpoint(r: &Record) -> ReadResp {
    ReadResp {
        content: Some(pb::read_resp::Content::Checkpoint(pb::read_resp::Checkpoint {
            commit_position: r.commit,
            prepare_position: r.prepare,
            timestamp: Some(prost_types::Timestamp::from(SystemTime::now())),
        })),
    }
}

/// "Caught up" (`true`) or "fell behind" (`false`).
fn notice(caught_up: bool) -> ReadResp {
    let timestamp = Some(prost_types::Timestamp::from(SystemTime::now()));
    let content = if caught_up {
        pb::read_resp::Content::CaughtUp(pb::read_resp::CaughtUp {
            timestamp,
            stream_revision: None,
            position: None,
        })
    } else {
        pb::read_resp::Content::FellBehind(pb::read_resp::FellBehind {
            timestamp,
            stream_revision: None,
            position: None,
        })
    };
    ReadResp { content: Some(content) }
}

fn expected_of_append(e: Option<pb::append_req::options::ExpectedStreamRevision>) -> Expected {
    use pb::append_req::options::ExpectedStreamRevision as E;
    match e {
        Some(E::Revision(r)) => Expected::Revision(r),
        Some(E::NoStream(_)) => Expected::NoStream,
        Some(E::StreamExists(_)) => Expected::StreamExists,
        Some(E::Any(_)) | None => Expected::Any,
    }
}

fn expected_of_tombstone(
    e: Option<pb::tombstone_req::options::ExpectedStreamRevision>,
) -> Expected {
    use pb::tombstone_req::options::ExpectedStreamRevision as E;
    match e {
        Some(E::Revision(r)) => Expected::Revision(r),
        Some(E::NoStream(_)) => Expected::NoStream,
        Some(E::StreamExists(_)) => Expected::StreamExists,
        Some(E::Any(_)) | None => Expected::Any,
    }
}

fn wrong_expected_version(current: Option<u64>, expected: Expected) -> AppendResp {
    use pb::append_resp::wrong_expected_version as w;
    let (current_revision_option, current_revision_option_20_6_0) = match current {
        Some(c) => (
            w::CurrentRevisionOption::CurrentRevision(c),
            w::CurrentRevisionOption2060::CurrentRevision2060(c),
        ),
        None => (
            w::CurrentRevisionOption::CurrentNoStream(()),
            w::CurrentRevisionOption2060::NoStream2060(()),
        ),
    };
    let expected_revision_option = match expected {
        Expected::Revision(r) => w::ExpectedRevisionOption::ExpectedRevision(r),
        Expected::Any => w::ExpectedRevisionOption::ExpectedAny(()),
        Expected::StreamExists => w::ExpectedRevisionOption::ExpectedStreamExists(()),
        Expected::NoStream => w::ExpectedRevisionOption::ExpectedNoStream(()),
    };
    let expected_revision_option_20_6_0 = match expected {
        Expected::Revision(r) => Some(w::ExpectedRevisionOption2060::ExpectedRevision2060(r)),
        Expected::Any => Some(w::ExpectedRevisionOption2060::Any2060(())),
        Expected::StreamExists => Some(w::ExpectedRevisionOption2060::StreamExists2060(())),
        Expected::NoStream => None,
    };
    AppendResp {
        result: Some(pb::append_resp::Result::WrongExpectedVersion(
            pb::append_resp::WrongExpectedVersion {
                current_revision_option: Some(current_revision_option),
                current_revision_option_20_6_0: Some(current_revision_option_20_6_0),
                expected_revision_option: Some(expected_revision_option),
                expected_revision_option_20_6_0,
            },
        )),
    }
}

#[tonic::async_trait]
impl Streams for Service {
    type ReadStream = ReadStream;

    async fn read(&self, request: Request<ReadReq>) -> Result<Response<ReadStream>, Status> {
        use pb::read_req::options::{CountOption, StreamOption, uuid_option};
        let options =
            request.into_inner().options.ok_or_else(|| Status::invalid_argument("no options"))?;
        let structured = matches!(
            options.uuid_option.as_ref().and_then(|u| u.content.as_ref()),
            Some(uuid_option::Content::Structured(_))
        );
        let backwards =
            options.read_direction == pb::read_req::options::ReadDirection::Backwards as i32;
        let filter = Filter::from(options.filter_option)?;
        let stream = match (options.stream_option, options.count_option) {
            (Some(StreamOption::Stream(s)), Some(CountOption::Count(n))) => {
                once_stream(self.read_stream(s, backwards, n, structured)?)
            }
            (Some(StreamOption::All(a)), Some(CountOption::Count(n))) => {
                once_stream(self.read_all(a, backwards, n, filter.as_ref(), structured)?)
            }
            (Some(StreamOption::All(a)), Some(CountOption::Subscription(_))) => {
                self.subscribe_all(a, filter, structured)?
            }
            // Pop never subscribes to one stream; the double does not pretend to.
            _ => {
                return Err(Status::unimplemented(
                    "the double serves stream reads, $all reads and $all subscriptions",
                ));
            }
        };
        Ok(Response::new(stream))
    }

    async fn append(
        &self,
        request: Request<Streaming<AppendReq>>,
    ) -> Result<Response<AppendResp>, Status> {
        use pb::append_req::Content;
        let mut incoming = request.into_inner();
        let Some(Content::Options(options)) =
            incoming.next().await.transpose()?.and_then(|m| m.content)
        else {
            return Err(Status::invalid_argument("an append must start with its options"));
        };
        let name = stream_name(options.stream_identifier)?;
        let expected = expected_of_append(options.expected_stream_revision);
        let mut proposed = Vec::new();
        while let Some(message) = incoming.next().await.transpose()? {
            let Some(Content::ProposedMessage(m)) = message.content else {
                return Err(Status::invalid_argument("options sent twice in one append"));
            };
            let mut metadata = m.metadata;
            // GUESS (KurrentDB's required metadata, as every client sends it): an event
            // without `type` or `content-type` is refused.
            let (Some(event_type), Some(content_type)) =
                (metadata.remove("type"), metadata.remove("content-type"))
            else {
                return Err(exception(
                    Code::InvalidArgument,
                    "Required metadata properties are missing: type, content-type".into(),
                    "missing-required-metadata-property",
                    &[("required-metadata-properties", "type,content-type".into())],
                ));
            };
            proposed.push(Proposed {
                id: uuid_from(m.id)?,
                event_type,
                content_type,
                data: m.data,
                custom_metadata: m.custom_metadata,
            });
        }
        let outcome = {
            let mut log = self.0.lock()?;
            let outcome = log.append(&name, expected, proposed, now_ticks());
            let records = log.records().len();
            drop(log);
            self.0.written.send_replace(records);
            outcome
        };
        let result = match outcome.map_err(|why| refused(&name, why))? {
            Appended::Success { revision, position } => {
                use pb::append_resp::success::{CurrentRevisionOption, PositionOption};
                pb::append_resp::Result::Success(pb::append_resp::Success {
                    current_revision_option: Some(match revision {
                        Some(r) => CurrentRevisionOption::CurrentRevision(r),
                        None => CurrentRevisionOption::NoStream(()),
                    }),
                    position_option: Some(PositionOption::Position(pb::append_resp::Position {
                        commit_position: position.0,
                        prepare_position: position.1,
                    })),
                })
            }
            Appended::WrongExpectedVersion { current, expected } => {
                return Ok(Response::new(wrong_expected_version(current, expected)));
            }
        };
        Ok(Response::new(AppendResp { result: Some(result) }))
    }

    async fn delete(&self, _request: Request<DeleteReq>) -> Result<Response<DeleteResp>, Status> {
        // Pop never soft-deletes (a reaped stream must stay closed): not part of the double.
        Err(Status::unimplemented("the double has no soft delete; pop tombstones"))
    }

    async fn tombstone(
        &self,
        request: Request<TombstoneReq>,
    ) -> Result<Response<TombstoneResp>, Status> {
        let options =
            request.into_inner().options.ok_or_else(|| Status::invalid_argument("no options"))?;
        let name = stream_name(options.stream_identifier)?;
        let expected = expected_of_tombstone(options.expected_stream_revision);
        let outcome = {
            let mut log = self.0.lock()?;
            let outcome = log.tombstone(&name, expected, now_ticks());
            let records = log.records().len();
            drop(log);
            self.0.written.send_replace(records);
            outcome
        };
        let (commit, prepare) = outcome.map_err(|why| refused(&name, why))?;
        Ok(Response::new(TombstoneResp {
            position_option: Some(pb::tombstone_resp::PositionOption::Position(
                pb::tombstone_resp::Position { commit_position: commit, prepare_position: prepare },
            )),
        }))
    }

    type BatchAppendStream = Pin<Box<dyn Stream<Item = Result<BatchAppendResp, Status>> + Send>>;

    async fn batch_append(
        &self,
        _request: Request<Streaming<BatchAppendReq>>,
    ) -> Result<Response<Self::BatchAppendStream>, Status> {
        Err(Status::unimplemented("the double has no batch append; pop appends per stream"))
    }
}

#[tonic::async_trait]
impl ServerFeatures for Service {
    async fn get_supported_methods(
        &self,
        _request: Request<()>,
    ) -> Result<Response<SupportedMethods>, Status> {
        let method = |name: &str| SupportedMethod {
            method_name: name.to_owned(),
            service_name: "event_store.client.streams.streams".to_owned(),
            features: Vec::new(),
        };
        Ok(Response::new(SupportedMethods {
            methods: ["read", "append", "tombstone"].into_iter().map(method).collect(),
            event_store_server_version: crate::SERVER_VERSION.to_owned(),
        }))
    }
}
