//! `GET /metrics`: requests, batch sizes, queue depth and latency, in the Prometheus
//! (OpenMetrics) text format.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    route: String,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabel {
    route: String,
}

/// The server's metrics.
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    latency: Family<RouteLabel, Histogram>,
    batch_inputs: Histogram,
    queue_inputs: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::default();
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register("dmoerm_requests", "HTTP requests by route and status", requests.clone());
        let latency = Family::<RouteLabel, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.001, 2.0, 17)) // 1 ms .. 65 s
        });
        registry.register("dmoerm_request_duration_seconds", "Request latency by route", latency.clone());
        let batch_inputs = Histogram::new(exponential_buckets(1.0, 2.0, 11)); // 1 .. 1024
        registry.register("dmoerm_batch_inputs", "Conversations per scored batch", batch_inputs.clone());
        let queue_inputs = Gauge::default();
        registry.register("dmoerm_queue_inputs", "Conversations waiting or being scored", queue_inputs.clone());
        Self { registry, requests, latency, batch_inputs, queue_inputs }
    }
}

impl Metrics {
    /// Counts one answered request.
    pub fn observe_request(&self, route: &str, status: u16, seconds: f64) {
        self.requests.get_or_create(&RequestLabels { route: route.to_string(), status }).inc();
        self.latency.get_or_create(&RouteLabel { route: route.to_string() }).observe(seconds);
    }

    /// Records the size of one batch the worker scored.
    pub fn observe_batch(&self, inputs: usize) {
        self.batch_inputs.observe(inputs as f64);
    }

    /// The text of `GET /metrics`, with the queue depth as of now.
    pub fn render(&self, queued: usize) -> String {
        self.queue_inputs.set(i64::try_from(queued).unwrap_or(i64::MAX));
        let mut out = String::new();
        // writing into a String cannot fail
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// The content type of [`Metrics::render`].
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
