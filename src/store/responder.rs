//! One responder per proposal or read: a one-shot channel answered exactly once. Answering
//! consumes it, so a second answer does not compile; dropping it unanswered answers
//! `ProposalDropped(Unanswered)`, so no caller waits forever. The caller's side is a
//! future (`Response`) that also has a blocking `wait` for threads outside async code.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::sync::oneshot;

use crate::RegionId;
use crate::region::{DroppedReason, RegionError};

/// What a request gets back: its result or a typed region error.
pub type RegionResult<T> = Result<T, RegionError>;

/// The runtime's end: answers the request once.
#[derive(Debug)]
pub struct Responder<T> {
    sender: Option<oneshot::Sender<RegionResult<T>>>,
    region: RegionId,
    /// The request's kind, counted with its outcome when answered.
    kind: &'static str,
}

/// What a request answers with names the request, for the answer's metric
/// (`flotilla_store_requests_total{request, outcome}`).
pub trait RequestKind {
    /// The request's name.
    const NAME: &'static str;
}

/// The caller's end: resolves to the answer.
#[derive(Debug)]
pub struct Response<T> {
    receiver: oneshot::Receiver<RegionResult<T>>,
    region: RegionId,
}

/// A responder and the response it answers, for a request to `region`.
pub fn response_channel<T: RequestKind>(region: RegionId) -> (Responder<T>, Response<T>) {
    let (sender, receiver) = oneshot::channel();
    (
        Responder {
            sender: Some(sender),
            region,
            kind: T::NAME,
        },
        Response { receiver, region },
    )
}

impl<T> Responder<T> {
    /// Answers the request. A caller that went away is not an error: the answer is dropped.
    pub fn respond(mut self, result: RegionResult<T>) {
        if let Some(sender) = self.sender.take() {
            requests_counter(self.kind, outcome(&result)).increment(1);
            let _ = sender.send(result);
        }
    }

    /// Answers the request, its count added to `tally` (counted when the tally is).
    pub(crate) fn respond_tallied(mut self, result: RegionResult<T>, tally: &mut AnswerTally) {
        if let Some(sender) = self.sender.take() {
            tally.add(self.kind, outcome(&result));
            let _ = sender.send(result);
        }
    }

    /// Answers with an error.
    pub fn fail(self, error: RegionError) {
        self.respond(Err(error));
    }

    /// Whether the caller stopped waiting (its `Response` was dropped): the runtime may
    /// skip work that only this caller wanted, such as a read.
    pub fn is_abandoned(&self) -> bool {
        self.sender.as_ref().is_none_or(|s| s.is_closed())
    }

    /// The region the request was sent to.
    pub fn region(&self) -> RegionId {
        self.region
    }
}

impl<T> Drop for Responder<T> {
    fn drop(&mut self) {
        if let Some(sender) = self.sender.take() {
            let result = Err(unanswered(self.region));
            requests_counter(self.kind, outcome(&result)).increment(1);
            let _ = sender.send(result);
        }
    }
}

/// Answers counted by request and outcome (`flotilla_store_requests_total`), added to the
/// metric in one go when the tally is dropped or `record`ed: a poller answering a batch
/// looks each labelled counter up once, not once per answer (that lookup was a twentieth
/// of a busy store's time). The batch's answers are counted once they are all out, so a
/// caller may see its answer a moment before the metric does.
#[derive(Debug, Default)]
pub(crate) struct AnswerTally(Vec<(&'static str, &'static str, u64)>);

impl AnswerTally {
    fn add(&mut self, kind: &'static str, outcome: &'static str) {
        match self
            .0
            .iter_mut()
            .find(|(k, o, _)| *k == kind && *o == outcome)
        {
            Some((_, _, n)) => *n += 1,
            None => self.0.push((kind, outcome, 1)),
        }
    }

    /// Adds what was tallied to the metric; the tally starts again from nothing.
    pub(crate) fn record(&mut self) {
        for (kind, outcome, n) in self.0.drain(..) {
            requests_counter(kind, outcome).increment(n);
        }
    }
}

/// An answer's outcome label: `ok` or the error's kind.
fn outcome<T>(result: &RegionResult<T>) -> &'static str {
    match result {
        Ok(_) => "ok",
        Err(e) => e.kind(),
    }
}

fn requests_counter(kind: &'static str, outcome: &'static str) -> metrics::Counter {
    metrics::counter!("flotilla_store_requests_total", "request" => kind, "outcome" => outcome)
}

impl Drop for AnswerTally {
    fn drop(&mut self) {
        self.record();
    }
}

fn unanswered(region: RegionId) -> RegionError {
    RegionError::ProposalDropped {
        region,
        reason: DroppedReason::Unanswered,
    }
}

impl<T> Response<T> {
    /// Blocks the thread until the answer comes. Not for async code (await the response
    /// instead): it panics inside a tokio runtime.
    pub fn wait(self) -> RegionResult<T> {
        self.receiver
            .blocking_recv()
            .unwrap_or_else(|_| Err(unanswered(self.region)))
    }

    /// Blocks the thread until the answer comes or `timeout` passes (None: no answer
    /// yet; the response can still be waited on). Polls, so for tests and tools rather
    /// than hot paths.
    pub fn wait_for(&mut self, timeout: std::time::Duration) -> Option<RegionResult<T>> {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            if let Some(answer) = self.try_take() {
                return Some(answer);
            }
            if std::time::Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
    }

    /// The answer if it has come, without waiting.
    pub fn try_take(&mut self) -> Option<RegionResult<T>> {
        match self.receiver.try_recv() {
            Ok(result) => Some(result),
            Err(oneshot::error::TryRecvError::Empty) => None,
            Err(oneshot::error::TryRecvError::Closed) => Some(Err(unanswered(self.region))),
        }
    }
}

impl<T> Future for Response<T> {
    type Output = RegionResult<T>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let region = self.region;
        Pin::new(&mut self.receiver)
            .poll(cx)
            .map(|r| r.unwrap_or_else(|_| Err(unanswered(region))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    impl RequestKind for u32 {
        const NAME: &'static str = "test";
    }

    /// `flotilla_store_requests_total`'s lines as Prometheus renders them after `answer`.
    fn requests_counted(answer: impl FnOnce()) -> Vec<String> {
        let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        metrics::with_local_recorder(&recorder, answer);
        let mut lines: Vec<String> = handle
            .render()
            .lines()
            .filter(|l| l.starts_with("flotilla_store_requests_total{"))
            .map(str::to_string)
            .collect();
        lines.sort();
        lines
    }

    #[test]
    fn a_tally_counts_each_request_and_outcome_once_it_is_recorded() {
        let lines = requests_counted(|| {
            let mut tally = AnswerTally::default();
            let (responders, _responses): (Vec<_>, Vec<_>) =
                (0..4).map(|_| response_channel::<u32>(RegionId(1))).unzip();
            let mut responders = responders.into_iter();
            for r in responders.by_ref().take(3) {
                r.respond_tallied(Ok(1), &mut tally);
            }
            for r in responders {
                r.respond_tallied(Err(unanswered(RegionId(1))), &mut tally);
            }
            // Another request's answers with the same outcome are counted apart.
            tally.add("other", "ok");
            tally.record();
            tally.record();
            // Dropped unanswered, and answered on its own: counted at once.
            drop(response_channel::<u32>(RegionId(1)).0);
            response_channel::<u32>(RegionId(1)).0.respond(Ok(2));
        });
        assert_eq!(
            lines,
            vec![
                r#"flotilla_store_requests_total{request="other",outcome="ok"} 1"#,
                r#"flotilla_store_requests_total{request="test",outcome="ok"} 4"#,
                r#"flotilla_store_requests_total{request="test",outcome="proposal_dropped"} 2"#,
            ]
        );
    }

    #[test]
    fn a_dropped_tally_is_counted() {
        let lines = requests_counted(|| {
            let mut tally = AnswerTally::default();
            let (r, _response) = response_channel::<u32>(RegionId(1));
            r.respond_tallied(Ok(1), &mut tally);
        });
        assert_eq!(
            lines,
            vec![r#"flotilla_store_requests_total{request="test",outcome="ok"} 1"#]
        );
    }

    #[test]
    fn an_answer_reaches_the_caller_once() {
        let (responder, response) = response_channel::<u32>(RegionId(3));
        assert_eq!(responder.region(), RegionId(3));
        assert!(!responder.is_abandoned());
        responder.respond(Ok(7));
        assert_eq!(response.wait(), Ok(7));
    }

    #[test]
    fn a_responder_dropped_unanswered_answers_with_an_error() {
        let (responder, mut response) = response_channel::<u32>(RegionId(5));
        assert_eq!(response.try_take(), None);
        drop(responder);
        assert_eq!(
            response.try_take(),
            Some(Err(RegionError::ProposalDropped {
                region: RegionId(5),
                reason: DroppedReason::Unanswered,
            }))
        );
    }

    #[test]
    fn an_error_answer_is_delivered_as_given() {
        let (responder, response) = response_channel::<()>(RegionId(1));
        responder.fail(RegionError::StaleCommand {
            region: RegionId(1),
        });
        assert_eq!(
            response.wait(),
            Err(RegionError::StaleCommand {
                region: RegionId(1)
            })
        );
    }

    #[test]
    fn a_caller_that_went_away_shows_as_abandoned() {
        let (responder, response) = response_channel::<u32>(RegionId(1));
        drop(response);
        assert!(responder.is_abandoned());
        responder.respond(Ok(1)); // no panic, nobody to tell
    }

    #[test]
    fn the_response_is_a_future() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let (responder, response) = response_channel::<u32>(RegionId(1));
        let answer = std::thread::spawn(move || responder.respond(Ok(42)));
        assert_eq!(rt.block_on(response), Ok(42));
        answer.join().unwrap();
        let (responder, response) = response_channel::<u32>(RegionId(2));
        drop(responder);
        assert!(matches!(
            rt.block_on(response),
            Err(RegionError::ProposalDropped { .. })
        ));
    }
}
