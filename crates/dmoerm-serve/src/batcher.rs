//! Dynamic batching: one worker thread owns the model and scores what the requests queue.
//!
//! ```text
//! handler ── try_acquire(n inputs) ──► queue (bounded: queue_inputs) ──► worker thread
//!    ▲          full: 429                                                  │ merge score jobs:
//!    └────────── oneshot: this job's results ◄──── score_batch(all) ◄──────┘ window, inputs, tokens
//! ```
//!
//! The worker takes the first job, then waits up to `batch_window` for more score jobs while
//! the batch stays under `max_batch_inputs` and `max_batch_tokens`; jobs that queue while it
//! scores are merged in the next batch. A rank job (one prompt's candidates, routed once) runs
//! on its own. If a merged batch fails (a non-finite score, a panic), each of its jobs is scored
//! alone, so that only the job at fault gets the error. A job whose caller has gone (timed
//! out) is dropped unscored.

use std::panic::AssertUnwindSafe;
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use dmoerm::{Conversation, Message, Ranked, RewardModel, Score};
use tokio::sync::{oneshot, OwnedSemaphorePermit, Semaphore};

use crate::error::ServeError;
use crate::metrics::Metrics;

/// What a request asks the model to do.
#[derive(Debug)]
pub enum Work {
    /// Score each conversation (each routed on its own).
    Score(Vec<Conversation>),
    /// Route the history once and rank the candidates, best first.
    Rank { messages: Vec<Message>, candidates: Vec<String> },
}

/// What the model answered.
#[derive(Debug)]
pub enum Done {
    Scores(Vec<Score>),
    Ranked(Vec<Ranked>),
}

struct Job {
    work: Work,
    /// Conversations (or candidates): what the queue counts.
    inputs: usize,
    /// Tokens of the experts' inputs.
    tokens: usize,
    reply: oneshot::Sender<dmoerm::Result<Done>>,
    /// Its place in the queue, given back when the job is done.
    _permit: OwnedSemaphorePermit,
}

/// How the worker forms batches.
#[derive(Debug, Clone, Copy)]
pub struct BatchLimits {
    pub window: Duration,
    pub max_inputs: usize,
    pub max_tokens: usize,
}

/// The queue in front of the worker; cheap to share between handlers.
#[derive(Clone)]
pub struct Batcher {
    tx: mpsc::Sender<Job>,
    queue: Arc<Semaphore>,
    capacity: usize,
}

/// The worker thread; [`join`](Self::join) after every [`Batcher`] is dropped.
pub struct Worker(JoinHandle<()>);

impl Worker {
    /// Waits for the worker to finish the queued jobs and end.
    pub fn join(self) {
        // the worker catches the model's panics; a panic here is a bug of the loop itself
        let _ = self.0.join();
    }
}

impl Batcher {
    /// Starts the worker thread.
    pub fn start(
        model: Arc<RewardModel>,
        limits: BatchLimits,
        queue_inputs: usize,
        metrics: Arc<Metrics>,
    ) -> (Self, Worker) {
        let (tx, rx) = mpsc::channel();
        let handle = std::thread::Builder::new()
            .name("dmoerm-scorer".into())
            .spawn(move || run(&model, &rx, limits, &metrics))
            .expect("cannot start the scoring thread");
        (Self { tx, queue: Arc::new(Semaphore::new(queue_inputs)), capacity: queue_inputs }, Worker(handle))
    }

    /// Conversations waiting or being scored.
    pub fn queued(&self) -> usize {
        self.capacity - self.queue.available_permits()
    }

    /// Queues `work` (`inputs` conversations, `tokens` tokens) and waits for its results, at
    /// most `timeout`. [`ServeError::Busy`] at once when the queue has no room for it.
    pub async fn submit(
        &self,
        work: Work,
        inputs: usize,
        tokens: usize,
        timeout: Duration,
    ) -> Result<Done, ServeError> {
        let n = u32::try_from(inputs).map_err(|_| ServeError::Busy)?;
        let permit = self.queue.clone().try_acquire_many_owned(n).map_err(|_| ServeError::Busy)?;
        let (reply, done) = oneshot::channel();
        self.tx.send(Job { work, inputs, tokens, reply, _permit: permit }).map_err(|_| ServeError::ShuttingDown)?;
        match tokio::time::timeout(timeout, done).await {
            Err(_) => Err(ServeError::Timeout(timeout)),
            Ok(Err(_)) => Err(ServeError::ShuttingDown),
            Ok(Ok(result)) => result.map_err(ServeError::Model),
        }
    }
}

/// The worker's loop: ends when every sender is dropped and the queue is empty.
fn run(model: &RewardModel, rx: &mpsc::Receiver<Job>, limits: BatchLimits, metrics: &Metrics) {
    let mut held: Option<Job> = None;
    loop {
        let first = match held.take() {
            Some(job) => job,
            None => match rx.recv() {
                Ok(job) => job,
                Err(_) => return,
            },
        };
        if first.reply.is_closed() {
            continue;
        }
        if matches!(first.work, Work::Rank { .. }) {
            metrics.observe_batch(first.inputs);
            finish(model, first);
            continue;
        }
        let mut batch = vec![first];
        let (mut inputs, mut tokens) = (batch[0].inputs, batch[0].tokens);
        let deadline = Instant::now() + limits.window;
        while inputs < limits.max_inputs && tokens < limits.max_tokens {
            let Ok(job) = rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) else {
                break;
            };
            if job.reply.is_closed() {
                continue;
            }
            let fits = inputs + job.inputs <= limits.max_inputs && tokens + job.tokens <= limits.max_tokens;
            if matches!(job.work, Work::Score(_)) && fits {
                inputs += job.inputs;
                tokens += job.tokens;
                batch.push(job);
            } else {
                held = Some(job);
                break;
            }
        }
        metrics.observe_batch(inputs);
        score_together(model, batch);
    }
}

/// Scores the jobs' conversations as one batch and hands each job its share; if the batch
/// fails, scores each job alone.
fn score_together(model: &RewardModel, batch: Vec<Job>) {
    if batch.len() == 1 {
        if let Some(job) = batch.into_iter().next() {
            finish(model, job);
        }
        return;
    }
    let all: Vec<Conversation> = batch
        .iter()
        .flat_map(|job| match &job.work {
            Work::Score(convs) => convs.clone(),
            Work::Rank { .. } => Vec::new(),
        })
        .collect();
    match guarded(|| model.score_batch(&all)) {
        Ok(scores) if scores.len() == all.len() => {
            let mut scores = scores.into_iter();
            for job in batch {
                let mine: Vec<Score> = scores.by_ref().take(job.inputs).collect();
                let _ = job.reply.send(Ok(Done::Scores(mine)));
            }
        }
        _ => {
            for job in batch {
                finish(model, job);
            }
        }
    }
}

/// Scores `job` on its own, unless its caller has gone, and sends the result.
fn finish(model: &RewardModel, job: Job) {
    if job.reply.is_closed() {
        return;
    }
    let result = match &job.work {
        Work::Score(convs) => guarded(|| model.score_batch(convs)).map(Done::Scores),
        Work::Rank { messages, candidates } => guarded(|| model.rank_messages(messages, candidates)).map(Done::Ranked),
    };
    let _ = job.reply.send(result);
}

/// A panic inside the model becomes an error of this call; the worker lives on.
fn guarded<T>(f: impl FnOnce() -> dmoerm::Result<T>) -> dmoerm::Result<T> {
    std::panic::catch_unwind(AssertUnwindSafe(f)).unwrap_or_else(|panic| {
        let message = panic
            .downcast_ref::<&str>()
            .map(|s| (*s).to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown panic".into());
        Err(dmoerm::Error::Backend(format!("scoring panicked: {message}")))
    })
}
