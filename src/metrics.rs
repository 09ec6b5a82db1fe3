//! Server counters and their Prometheus text exposition.
//!
//! [`Metrics`] is a set of atomic counters that any part of the server bumps without locks;
//! [`Metrics::render`] writes them, plus gauges read at scrape time ([`Gauges`]), in the
//! Prometheus text format (version 0.0.4) served at `GET /metrics`.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

use crate::engine::WorkerStats;
use crate::sip::guard::{DropReason, RefuseReason};

/// Lowest SIP status code counted per code; others are counted as `other`.
const FIRST_CODE: u16 = 100;
/// Highest SIP status code counted per code.
const LAST_CODE: u16 = 699;
const CODES: usize = (LAST_CODE - FIRST_CODE + 1) as usize;

/// DTMF detection methods, in the order of their counters.
const DTMF_METHODS: [&str; 4] = ["rfc4733", "inband", "info", "other"];

/// Answering-machine verdicts, in the order of their counters.
const AMD_STATUSES: [&str; 4] = ["HUMAN", "MACHINE", "NOTSURE", "HANGUP"];
/// How a WebRTC leg's transport ended up (`outcome` label).
pub const WEBRTC_OUTCOMES: [&str; 5] = [
    "connected",
    "ice_timeout",
    "handshake_timeout",
    "handshake_failed",
    "consent_lost",
];
/// Why an offer to `POST /api/webrtc/{number}` got no call (`reason` label).
pub const WEBRTC_REFUSALS: [&str; 5] = ["too_many", "timeout", "refused", "bad_offer", "gone"];

/// Server-wide counters; share it as `Arc<Metrics>`.
#[derive(Debug)]
pub struct Metrics {
    sip_responses: Box<[AtomicU64]>,
    sip_responses_other: AtomicU64,
    dtmf: [AtomicU64; DTMF_METHODS.len()],
    amd: [AtomicU64; AMD_STATUSES.len()],
    webrtc_sessions: [AtomicU64; WEBRTC_OUTCOMES.len()],
    webrtc_refused: [AtomicU64; WEBRTC_REFUSALS.len()],
    webrtc_stun_rejected: AtomicU64,
    webrtc_dtls_dropped: AtomicU64,
    /// The synthesizer whose sentence counters are exported.
    tts: std::sync::OnceLock<crate::speech::tts::Tts>,
    /// The recogniser whose counters are exported.
    asr: std::sync::OnceLock<Arc<crate::speech::asr::Asr>>,
    recordings_finished: AtomicU64,
    recording_bytes: AtomicU64,
    script_errors: AtomicU64,
    calls_started: AtomicU64,
    calls_ended: AtomicU64,
    cdrs_written: AtomicU64,
    cdrs_dropped: AtomicU64,
    webhooks_delivered: AtomicU64,
    webhooks_failed: AtomicU64,
    webhooks_dropped: AtomicU64,
    webhook_retries: AtomicU64,
    events_lagged: AtomicU64,
    /// RTP and RTCP packets dropped for coming from a stranger, by [`Stranger`].
    strangers: [AtomicU64; 2],
    /// SRTP and SRTCP packets dropped, by [`SrtpDrop::ALL`] order and [`Stranger`] stream.
    srtp_dropped: [[AtomicU64; 2]; SrtpDrop::ALL.len()],
    /// SIP requests the guard refused, by [`RefuseReason::ALL`] order.
    sip_refused: [AtomicU64; RefuseReason::ALL.len()],
    /// SIP messages and TCP connections the guard dropped, by [`DropReason::ALL`] order.
    sip_dropped: [AtomicU64; DropReason::ALL.len()],
    /// Sources the guard blocked for exceeding their rates again and again.
    sip_escalations: AtomicU64,
    /// Failed digest authentications of callers.
    sip_auth_failures: AtomicU64,
}

/// Why a leg dropped an SRTP or SRTCP packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SrtpDrop {
    /// Its authentication tag did not verify.
    Auth = 0,
    /// It was a replay, or older than the replay window.
    Replay = 1,
    /// Anything else: too short, an unknown MKI.
    Malformed = 2,
}

impl SrtpDrop {
    /// Every reason, in counter order.
    pub const ALL: [SrtpDrop; 3] = [SrtpDrop::Auth, SrtpDrop::Replay, SrtpDrop::Malformed];

    /// The `reason` label.
    pub fn label(self) -> &'static str {
        match self {
            SrtpDrop::Auth => "auth",
            SrtpDrop::Replay => "replay",
            SrtpDrop::Malformed => "malformed",
        }
    }
}

/// Which of a leg's two streams a packet from a stranger was aimed at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stranger {
    /// RTP.
    Rtp = 0,
    /// RTCP.
    Rtcp = 1,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            sip_responses: (0..CODES).map(|_| AtomicU64::new(0)).collect(),
            sip_responses_other: AtomicU64::new(0),
            dtmf: Default::default(),
            amd: Default::default(),
            webrtc_sessions: Default::default(),
            webrtc_refused: Default::default(),
            webrtc_stun_rejected: AtomicU64::new(0),
            webrtc_dtls_dropped: AtomicU64::new(0),
            tts: std::sync::OnceLock::new(),
            asr: std::sync::OnceLock::new(),
            recordings_finished: AtomicU64::new(0),
            recording_bytes: AtomicU64::new(0),
            script_errors: AtomicU64::new(0),
            calls_started: AtomicU64::new(0),
            calls_ended: AtomicU64::new(0),
            cdrs_written: AtomicU64::new(0),
            cdrs_dropped: AtomicU64::new(0),
            webhooks_delivered: AtomicU64::new(0),
            webhooks_failed: AtomicU64::new(0),
            webhooks_dropped: AtomicU64::new(0),
            webhook_retries: AtomicU64::new(0),
            events_lagged: AtomicU64::new(0),
            strangers: Default::default(),
            srtp_dropped: Default::default(),
            sip_refused: Default::default(),
            sip_dropped: Default::default(),
            sip_escalations: AtomicU64::new(0),
            sip_auth_failures: AtomicU64::new(0),
        }
    }
}

/// Values read at scrape time from the live parts of the server.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Gauges {
    /// Live calls (`CallRegistry::len`).
    pub active_calls: u64,
    /// Live conference rooms.
    pub rooms: u64,
    /// Members of all live rooms.
    pub room_members: u64,
    /// One sample per media worker, in worker order.
    pub workers: Vec<WorkerSample>,
    /// Each SIP trunk's state, in configuration order.
    pub trunks: Vec<crate::sip::trunks::TrunkStatus>,
}

/// One media worker's counters at scrape time.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WorkerSample {
    /// Ticks run.
    pub ticks: u64,
    /// Ticks that started late.
    pub late_ticks: u64,
    /// Frames skipped after falling behind.
    pub skipped_ticks: u64,
    /// Legs owned now.
    pub legs: u64,
    /// Further monotonic counters as `(metric suffix, help)` and value, exported as
    /// `switchboard_media_worker_SUFFIX_total`; see [`WorkerSample::from_stats`].
    pub extra_counters: Vec<(&'static str, &'static str, u64)>,
}

impl WorkerSample {
    /// Reads a worker's counters.
    ///
    /// A new `WorkerStats` counter is exported by pushing it onto `extra_counters` here.
    pub fn from_stats(s: &WorkerStats) -> WorkerSample {
        let extra_counters = vec![
            (
                "busy_microseconds",
                "Time the media worker spent working, in microseconds.",
                s.busy_us.load(Relaxed),
            ),
            (
                "rtp_packets_in",
                "RTP packets accepted by the worker's legs.",
                s.packets_in.load(Relaxed),
            ),
            (
                "rtp_packets_out",
                "RTP packets sent by the worker's legs.",
                s.packets_out.load(Relaxed),
            ),
            (
                "rtp_packets_lost",
                "RTP packets lost: expected from their sequence numbers, never received.",
                s.packets_lost.load(Relaxed),
            ),
            (
                "frames_concealed",
                "Audio frames concealed after loss or lateness (jitter buffer).",
                s.frames_concealed.load(Relaxed),
            ),
            (
                "decodes_skipped",
                "Received packets left undecoded: their RFC 6464 level was too quiet for the room.",
                s.decodes_skipped.load(Relaxed),
            ),
        ];
        WorkerSample {
            ticks: s.ticks.load(Relaxed),
            late_ticks: s.late_ticks.load(Relaxed),
            skipped_ticks: s.skipped_ticks.load(Relaxed),
            legs: s.legs.load(Relaxed) as u64,
            extra_counters,
        }
    }
}

impl Metrics {
    /// A SIP response with this status code was sent.
    pub fn sip_response(&self, code: u16) {
        match code
            .checked_sub(FIRST_CODE)
            .and_then(|i| self.sip_responses.get(usize::from(i)))
        {
            Some(c) => c.fetch_add(1, Relaxed),
            None => self.sip_responses_other.fetch_add(1, Relaxed),
        };
    }

    /// A key press was detected by `method` (`rfc4733`, `inband`, `info`; anything else is
    /// counted as `other`).
    pub fn dtmf(&self, method: &str) {
        let i = DTMF_METHODS
            .iter()
            .position(|m| *m == method)
            .unwrap_or(DTMF_METHODS.len() - 1);
        self.dtmf[i].fetch_add(1, Relaxed);
    }

    /// Exports the sentence counters of `tts` (the server's one synthesizer; set once).
    pub fn watch_tts(&self, tts: crate::speech::tts::Tts) {
        let _ = self.tts.set(tts);
    }

    /// Exports the counters of `asr` (the server's one recogniser; set once).
    pub fn watch_asr(&self, asr: Arc<crate::speech::asr::Asr>) {
        let _ = self.asr.set(asr);
    }

    /// A WebRTC leg's transport connected or ended with `outcome` (one of
    /// [`WEBRTC_OUTCOMES`]; others are not counted).
    pub fn webrtc_session(&self, outcome: &str) {
        if let Some(i) = WEBRTC_OUTCOMES.iter().position(|s| *s == outcome) {
            self.webrtc_sessions[i].fetch_add(1, Relaxed);
        }
    }

    /// An HTTP offer got no call, for `reason` (one of [`WEBRTC_REFUSALS`]).
    pub fn webrtc_refused(&self, reason: &str) {
        if let Some(i) = WEBRTC_REFUSALS.iter().position(|s| *s == reason) {
            self.webrtc_refused[i].fetch_add(1, Relaxed);
        }
    }

    /// STUN checks refused (400, 401, 487) and DTLS datagrams dropped (from an address that
    /// passed no check, or not framed as DTLS) by WebRTC legs.
    pub fn webrtc_rejected(&self, stun: u64, dtls: u64) {
        self.webrtc_stun_rejected.fetch_add(stun, Relaxed);
        self.webrtc_dtls_dropped.fetch_add(dtls, Relaxed);
    }

    /// Answering-machine detection ended with `status` (unknown ones are not counted).
    pub fn amd(&self, status: &str) {
        if let Some(i) = AMD_STATUSES.iter().position(|s| *s == status) {
            self.amd[i].fetch_add(1, Relaxed);
        }
    }

    /// A recording was finalised with this many bytes of audio file.
    pub fn recording_finished(&self, bytes: u64) {
        self.recordings_finished.fetch_add(1, Relaxed);
        self.recording_bytes.fetch_add(bytes, Relaxed);
    }

    /// A call-flow script failed.
    pub fn script_error(&self) {
        self.script_errors.fetch_add(1, Relaxed);
    }

    /// A call began.
    pub fn call_started(&self) {
        self.calls_started.fetch_add(1, Relaxed);
    }

    /// A call ended.
    pub fn call_ended(&self) {
        self.calls_ended.fetch_add(1, Relaxed);
    }

    /// A CDR line was written.
    pub fn cdr_written(&self) {
        self.cdrs_written.fetch_add(1, Relaxed);
    }

    /// A CDR was dropped (queue full or write failed).
    pub fn cdr_dropped(&self) {
        self.cdrs_dropped.fetch_add(1, Relaxed);
    }

    /// A webhook POST was accepted by its receiver.
    pub fn webhook_delivered(&self) {
        self.webhooks_delivered.fetch_add(1, Relaxed);
    }

    /// A webhook event was given up after its last attempt.
    pub fn webhook_failed(&self) {
        self.webhooks_failed.fetch_add(1, Relaxed);
    }

    /// `n` webhook events were dropped before sending (queue full or bus lag).
    pub fn webhook_dropped(&self, n: u64) {
        self.webhooks_dropped.fetch_add(n, Relaxed);
    }

    /// A webhook POST is being retried.
    pub fn webhook_retry(&self) {
        self.webhook_retries.fetch_add(1, Relaxed);
    }

    /// An event-stream client lost `n` events by falling behind.
    pub fn events_lagged(&self, n: u64) {
        self.events_lagged.fetch_add(n, Relaxed);
    }

    /// A leg dropped a packet from a source other than its own (the strict RTP rule).
    pub fn stranger_dropped(&self, stream: Stranger) {
        self.strangers[stream as usize].fetch_add(1, Relaxed);
    }

    /// A leg dropped an SRTP (`Stranger::Rtp`) or SRTCP packet that failed its checks.
    pub fn srtp_dropped(&self, why: SrtpDrop, stream: Stranger) {
        self.srtp_dropped[why as usize][stream as usize].fetch_add(1, Relaxed);
    }

    /// The SIP guard refused a request.
    pub fn sip_refused(&self, reason: RefuseReason) {
        self.sip_refused[reason as usize].fetch_add(1, Relaxed);
    }

    /// The SIP guard dropped a message or closed a TCP connection.
    pub fn sip_dropped(&self, reason: DropReason) {
        self.sip_dropped[reason as usize].fetch_add(1, Relaxed);
    }

    /// The SIP guard blocked a source that kept exceeding its rate.
    pub fn sip_escalation(&self) {
        self.sip_escalations.fetch_add(1, Relaxed);
    }

    /// A caller failed digest authentication (wrong password, unknown user, replay).
    pub fn sip_auth_failure(&self) {
        self.sip_auth_failures.fetch_add(1, Relaxed);
    }

    /// Requests the SIP guard refused so far for `reason`.
    pub fn sip_refused_count(&self, reason: RefuseReason) -> u64 {
        self.sip_refused[reason as usize].load(Relaxed)
    }

    /// Messages the SIP guard dropped so far for `reason`.
    pub fn sip_dropped_count(&self, reason: DropReason) -> u64 {
        self.sip_dropped[reason as usize].load(Relaxed)
    }

    /// Webhook events dropped so far.
    pub fn webhooks_dropped(&self) -> u64 {
        self.webhooks_dropped.load(Relaxed)
    }

    /// Webhook events delivered so far.
    pub fn webhooks_delivered(&self) -> u64 {
        self.webhooks_delivered.load(Relaxed)
    }

    /// Webhook events given up so far.
    pub fn webhooks_failed(&self) -> u64 {
        self.webhooks_failed.load(Relaxed)
    }

    /// CDRs written so far.
    pub fn cdrs_written(&self) -> u64 {
        self.cdrs_written.load(Relaxed)
    }

    /// CDRs dropped so far.
    pub fn cdrs_dropped(&self) -> u64 {
        self.cdrs_dropped.load(Relaxed)
    }

    /// The Prometheus text exposition of every counter and of `gauges`.
    pub fn render(&self, gauges: &Gauges) -> String {
        let mut out = String::with_capacity(8 * 1024);
        let mut w = Writer(&mut out);

        w.family(
            "switchboard_sip_responses_total",
            "SIP responses sent, by status code.",
            "counter",
        );
        for (i, c) in self.sip_responses.iter().enumerate() {
            let v = c.load(Relaxed);
            if v > 0 {
                let code = (FIRST_CODE as usize + i).to_string();
                w.sample("switchboard_sip_responses_total", &[("code", &code)], v);
            }
        }
        w.sample(
            "switchboard_sip_responses_total",
            &[("code", "other")],
            self.sip_responses_other.load(Relaxed),
        );

        w.family(
            "switchboard_sip_refused_total",
            "SIP requests refused by the guard (403 or 503), by reason.",
            "counter",
        );
        for (r, c) in RefuseReason::ALL.iter().zip(&self.sip_refused) {
            w.sample(
                "switchboard_sip_refused_total",
                &[("reason", r.label())],
                c.load(Relaxed),
            );
        }
        w.family(
            "switchboard_sip_dropped_total",
            "SIP messages dropped unanswered and TCP connections closed by the guard, by reason.",
            "counter",
        );
        for (r, c) in DropReason::ALL.iter().zip(&self.sip_dropped) {
            w.sample(
                "switchboard_sip_dropped_total",
                &[("reason", r.label())],
                c.load(Relaxed),
            );
        }

        w.family(
            "switchboard_dtmf_digits_total",
            "Key presses detected, by method.",
            "counter",
        );
        for (m, c) in DTMF_METHODS.iter().zip(&self.dtmf) {
            w.sample(
                "switchboard_dtmf_digits_total",
                &[("method", m)],
                c.load(Relaxed),
            );
        }

        if let Some(asr) = self.asr.get() {
            let c = asr.counters();
            for (name, help, v) in [
                (
                    "switchboard_asr_recognitions_total",
                    "Utterances recognised for listen().",
                    c.recognitions,
                ),
                (
                    "switchboard_asr_errors_total",
                    "Utterances the recogniser failed on.",
                    c.errors,
                ),
            ] {
                w.family(name, help, "counter");
                w.sample(name, &[], v);
            }
        }
        if let Some(tts) = self.tts.get() {
            let s = tts.stats();
            for (name, help, kind, v) in [
                (
                    "switchboard_tts_synthesized_total",
                    "Sentences synthesized.",
                    "counter",
                    s.synthesized,
                ),
                (
                    "switchboard_tts_cache_hits_total",
                    "Sentences played from the sentence cache.",
                    "counter",
                    s.cached,
                ),
                (
                    "switchboard_tts_errors_total",
                    "Sentences refused or failed.",
                    "counter",
                    s.errors,
                ),
                (
                    "switchboard_tts_cache_sentences",
                    "Sentences in the cache.",
                    "gauge",
                    s.cache_entries,
                ),
                (
                    "switchboard_tts_cache_bytes",
                    "Bytes of audio in the sentence cache.",
                    "gauge",
                    s.cache_bytes,
                ),
            ] {
                w.family(name, help, kind);
                w.sample(name, &[], v);
            }
        }
        w.family(
            "switchboard_amd_results_total",
            "Answering-machine detections, by verdict.",
            "counter",
        );
        for (s, c) in AMD_STATUSES.iter().zip(&self.amd) {
            w.sample(
                "switchboard_amd_results_total",
                &[("status", s)],
                c.load(Relaxed),
            );
        }

        for (name, help, label, labels, counters) in [
            (
                "switchboard_webrtc_sessions_total",
                "WebRTC legs whose ICE and DTLS connected, or how they failed.",
                "outcome",
                &WEBRTC_OUTCOMES[..],
                &self.webrtc_sessions[..],
            ),
            (
                "switchboard_webrtc_offers_refused_total",
                "Offers to POST /api/webrtc that got no call, by reason.",
                "reason",
                &WEBRTC_REFUSALS[..],
                &self.webrtc_refused[..],
            ),
        ] {
            w.family(name, help, "counter");
            for (l, c) in labels.iter().zip(counters) {
                w.sample(name, &[(label, l)], c.load(Relaxed));
            }
        }
        w.family(
            "switchboard_rtp_stranger_packets_dropped_total",
            "RTP and RTCP packets dropped for coming from a source other than the leg's \
             (strict_rtp), by stream.",
            "counter",
        );
        for (stream, c) in ["rtp", "rtcp"].iter().zip(&self.strangers) {
            w.sample(
                "switchboard_rtp_stranger_packets_dropped_total",
                &[("stream", stream)],
                c.load(Relaxed),
            );
        }

        w.family(
            "switchboard_srtp_dropped_total",
            "SRTP and SRTCP packets dropped unplayed: a tag that did not verify (auth), a \
             replayed or too old packet (replay), or a malformed one, by stream.",
            "counter",
        );
        for (why, by_stream) in SrtpDrop::ALL.iter().zip(&self.srtp_dropped) {
            for (stream, c) in ["rtp", "rtcp"].iter().zip(by_stream) {
                w.sample(
                    "switchboard_srtp_dropped_total",
                    &[("reason", why.label()), ("stream", stream)],
                    c.load(Relaxed),
                );
            }
        }

        for (name, help, c) in [
            (
                "switchboard_recordings_finished_total",
                "Recordings finalised.",
                &self.recordings_finished,
            ),
            (
                "switchboard_recording_bytes_total",
                "Bytes of recorded audio files finalised.",
                &self.recording_bytes,
            ),
            (
                "switchboard_script_errors_total",
                "Call-flow script errors.",
                &self.script_errors,
            ),
            (
                "switchboard_calls_started_total",
                "Calls begun.",
                &self.calls_started,
            ),
            (
                "switchboard_calls_ended_total",
                "Calls ended.",
                &self.calls_ended,
            ),
            (
                "switchboard_cdrs_written_total",
                "Call detail records written.",
                &self.cdrs_written,
            ),
            (
                "switchboard_cdrs_dropped_total",
                "Call detail records dropped (queue full or write failed).",
                &self.cdrs_dropped,
            ),
            (
                "switchboard_webhooks_delivered_total",
                "Webhook events accepted by their receiver.",
                &self.webhooks_delivered,
            ),
            (
                "switchboard_webhooks_failed_total",
                "Webhook events given up after the last attempt.",
                &self.webhooks_failed,
            ),
            (
                "switchboard_webhooks_dropped_total",
                "Webhook events dropped before sending (queue full).",
                &self.webhooks_dropped,
            ),
            (
                "switchboard_webhook_retries_total",
                "Webhook POSTs retried.",
                &self.webhook_retries,
            ),
            (
                "switchboard_sip_escalations_total",
                "Sources blocked for a while after exceeding their SIP rates again and again.",
                &self.sip_escalations,
            ),
            (
                "switchboard_sip_auth_failures_total",
                "Failed digest authentications of callers (wrong password, unknown user, replay).",
                &self.sip_auth_failures,
            ),
            (
                "switchboard_webrtc_stun_rejected_total",
                "STUN checks of WebRTC legs refused: wrong or missing credentials, role conflict.",
                &self.webrtc_stun_rejected,
            ),
            (
                "switchboard_webrtc_dtls_dropped_total",
                "DTLS datagrams dropped by WebRTC legs: from an address that passed no ICE \
                 check, or not DTLS.",
                &self.webrtc_dtls_dropped,
            ),
            (
                "switchboard_event_stream_lagged_total",
                "Events lost by event-stream clients that fell behind.",
                &self.events_lagged,
            ),
        ] {
            w.family(name, help, "counter");
            w.sample(name, &[], c.load(Relaxed));
        }

        for (name, help, v) in [
            (
                "switchboard_active_calls",
                "Live calls.",
                gauges.active_calls,
            ),
            ("switchboard_rooms", "Live conference rooms.", gauges.rooms),
            (
                "switchboard_room_members",
                "Members of all live rooms.",
                gauges.room_members,
            ),
        ] {
            w.family(name, help, "gauge");
            w.sample(name, &[], v);
        }

        let per_worker: [PerWorker; 4] = [
            (
                "switchboard_media_worker_ticks_total",
                "Media ticks run.",
                "counter",
                |s| s.ticks,
            ),
            (
                "switchboard_media_worker_late_ticks_total",
                "Media ticks that started late.",
                "counter",
                |s| s.late_ticks,
            ),
            (
                "switchboard_media_worker_skipped_ticks_total",
                "Media frames skipped after falling behind.",
                "counter",
                |s| s.skipped_ticks,
            ),
            (
                "switchboard_media_worker_legs",
                "Call legs owned by the media worker.",
                "gauge",
                |s| s.legs,
            ),
        ];
        render_trunks(&mut w, &gauges.trunks);

        let ids: Vec<String> = (0..gauges.workers.len()).map(|i| i.to_string()).collect();
        for (name, help, kind, get) in per_worker {
            w.family(name, help, kind);
            for (id, s) in ids.iter().zip(&gauges.workers) {
                w.sample(name, &[("worker", id)], get(s));
            }
        }
        if let Some(first) = gauges.workers.first() {
            for (k, (suffix, help, _)) in first.extra_counters.iter().enumerate() {
                let name = format!("switchboard_media_worker_{suffix}_total");
                w.family(&name, help, "counter");
                for (id, s) in ids.iter().zip(&gauges.workers) {
                    if let Some((_, _, v)) = s.extra_counters.get(k) {
                        w.sample(&name, &[("worker", id)], *v);
                    }
                }
            }
        }
        out
    }
}

/// A per-trunk gauge: name, help and how to read it.
type TrunkGauge = (
    &'static str,
    &'static str,
    fn(&crate::sip::trunks::TrunkStatus) -> u64,
);

/// The per-trunk gauges and the attempts by result.
fn render_trunks(w: &mut Writer<'_>, trunks: &[crate::sip::trunks::TrunkStatus]) {
    use crate::sip::trunks::RegistrationStatus;
    let gauges: [TrunkGauge; 3] = [
        (
            "switchboard_trunk_registered",
            "1 while the trunk's registration is bound at its registrar (0 also when it does not register).",
            |t| u64::from(matches!(t.registration, RegistrationStatus::Registered { .. })),
        ),
        (
            "switchboard_trunk_up",
            "1 while calls may go through the trunk, 0 while it is down.",
            |t| u64::from(t.up),
        ),
        (
            "switchboard_trunk_calls",
            "Calls through the trunk now.",
            |t| t.calls as u64,
        ),
    ];
    for (name, help, get) in gauges {
        w.family(name, help, "gauge");
        for t in trunks {
            w.sample(name, &[("trunk", &t.name)], get(t));
        }
    }
    let name = "switchboard_trunk_attempts_total";
    w.family(
        name,
        "Calls through the trunk that ended, by result (answered, redirected, 4xx, 5xx, 6xx, timeout).",
        "counter",
    );
    for t in trunks {
        for (result, v) in t.results.labelled() {
            w.sample(name, &[("trunk", &t.name), ("result", result)], v);
        }
    }
}

/// A per-worker metric: name, help, type and how to read it from a sample.
type PerWorker = (
    &'static str,
    &'static str,
    &'static str,
    fn(&WorkerSample) -> u64,
);

struct Writer<'a>(&'a mut String);

impl Writer<'_> {
    fn family(&mut self, name: &str, help: &str, kind: &str) {
        // Writing to a String cannot fail.
        let _ = writeln!(self.0, "# HELP {name} {}", escape_help(help));
        let _ = writeln!(self.0, "# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: u64) {
        self.0.push_str(name);
        if !labels.is_empty() {
            self.0.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.0.push(',');
                }
                let _ = write!(self.0, "{k}=\"{}\"", escape_label(v));
            }
            self.0.push('}');
        }
        let _ = writeln!(self.0, " {value}");
    }
}

/// Escapes a label value: backslash, double quote and line feed.
pub fn escape_label(v: &str) -> String {
    let mut s = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => s.push_str("\\\\"),
            '"' => s.push_str("\\\""),
            '\n' => s.push_str("\\n"),
            c => s.push(c),
        }
    }
    s
}

/// Escapes HELP text: backslash and line feed.
fn escape_help(v: &str) -> String {
    v.replace('\\', "\\\\").replace('\n', "\\n")
}

#[cfg(test)]
pub(crate) mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use super::*;

    /// Checks every line against the text format and answers `name{labels}` → value.
    pub(crate) fn parse_exposition(text: &str) -> BTreeMap<String, f64> {
        let name = r"[a-zA-Z_:][a-zA-Z0-9_:]*";
        let help = regex::Regex::new(&format!(r"^# HELP ({name}) (.*)$")).unwrap();
        let ty = regex::Regex::new(&format!(
            r"^# TYPE ({name}) (counter|gauge|histogram|summary|untyped)$"
        ))
        .unwrap();
        let label = r#"[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\\\|\\"|\\n)*""#;
        let sample = regex::Regex::new(&format!(
            r"^({name})(\{{(?:{label})(?:,{label})*\}})? (-?[0-9.eE+-]+|NaN|\+Inf|-Inf)$"
        ))
        .unwrap();
        let mut typed = BTreeSet::new();
        let mut helped = BTreeSet::new();
        let mut seen = BTreeMap::new();
        assert!(text.ends_with('\n'), "exposition ends with a line feed");
        for line in text.lines() {
            if let Some(c) = help.captures(line) {
                assert!(helped.insert(c[1].to_string()), "second HELP: {line}");
            } else if let Some(c) = ty.captures(line) {
                assert!(typed.insert(c[1].to_string()), "second TYPE: {line}");
                assert!(
                    !seen
                        .keys()
                        .any(|k: &String| k == &c[1] || k.starts_with(&format!("{}{{", &c[1]))),
                    "TYPE after samples: {line}"
                );
            } else if let Some(c) = sample.captures(line) {
                assert!(typed.contains(&c[1]), "sample without TYPE: {line}");
                let key = format!("{}{}", &c[1], c.get(2).map_or("", |m| m.as_str()));
                let v: f64 = c[3].parse().unwrap();
                assert!(seen.insert(key, v).is_none(), "duplicate sample: {line}");
            } else {
                panic!("not a valid exposition line: {line:?}");
            }
        }
        seen
    }

    #[test]
    fn counters_render_in_valid_exposition_format() {
        let m = Metrics::default();
        m.sip_response(200);
        m.sip_response(200);
        m.sip_response(486);
        m.sip_response(99);
        m.sip_response(700);
        m.dtmf("rfc4733");
        m.dtmf("inband");
        m.dtmf("carrier pigeon");
        m.recording_finished(1000);
        m.recording_finished(24);
        m.script_error();
        m.call_started();
        m.call_ended();
        m.webhook_dropped(3);
        m.stranger_dropped(Stranger::Rtp);
        m.stranger_dropped(Stranger::Rtp);
        m.stranger_dropped(Stranger::Rtcp);
        m.sip_refused(RefuseReason::InviteRate);
        m.sip_refused(RefuseReason::InviteRate);
        m.sip_dropped(DropReason::Scanner);
        m.sip_escalation();
        m.sip_auth_failure();
        let stats = WorkerStats::default();
        stats.ticks.store(50, Relaxed);
        stats.late_ticks.store(2, Relaxed);
        stats.legs.store(7, Relaxed);
        let gauges = Gauges {
            active_calls: 4,
            rooms: 1,
            room_members: 3,
            workers: vec![
                WorkerSample::from_stats(&stats),
                WorkerSample::from_stats(&WorkerStats::default()),
            ],
            trunks: trunk_sample(),
        };
        let text = m.render(&gauges);
        let s = parse_exposition(&text);
        assert_eq!(s["switchboard_sip_responses_total{code=\"200\"}"], 2.0);
        assert_eq!(
            s["switchboard_rtp_stranger_packets_dropped_total{stream=\"rtp\"}"],
            2.0
        );
        assert_eq!(
            s["switchboard_rtp_stranger_packets_dropped_total{stream=\"rtcp\"}"],
            1.0
        );
        assert_eq!(s["switchboard_sip_responses_total{code=\"486\"}"], 1.0);
        assert_eq!(
            s["switchboard_sip_refused_total{reason=\"invite_rate\"}"],
            2.0
        );
        assert_eq!(s["switchboard_sip_refused_total{reason=\"draining\"}"], 0.0);
        assert_eq!(s["switchboard_sip_dropped_total{reason=\"scanner\"}"], 1.0);
        assert_eq!(
            s["switchboard_sip_dropped_total{reason=\"tcp_connections\"}"],
            0.0
        );
        assert_eq!(s["switchboard_sip_escalations_total"], 1.0);
        assert_eq!(s["switchboard_sip_auth_failures_total"], 1.0);
        assert_eq!(s["switchboard_sip_responses_total{code=\"other\"}"], 2.0);
        assert_eq!(s["switchboard_dtmf_digits_total{method=\"rfc4733\"}"], 1.0);
        assert_eq!(s["switchboard_dtmf_digits_total{method=\"other\"}"], 1.0);
        assert_eq!(s["switchboard_recording_bytes_total"], 1024.0);
        assert_eq!(s["switchboard_recordings_finished_total"], 2.0);
        assert_eq!(s["switchboard_webhooks_dropped_total"], 3.0);
        assert_eq!(s["switchboard_active_calls"], 4.0);
        assert_eq!(s["switchboard_room_members"], 3.0);
        assert_eq!(
            s["switchboard_media_worker_ticks_total{worker=\"0\"}"],
            50.0
        );
        assert_eq!(s["switchboard_media_worker_legs{worker=\"0\"}"], 7.0);
        assert_eq!(
            s["switchboard_media_worker_late_ticks_total{worker=\"1\"}"],
            0.0
        );
        assert!(s.contains_key("switchboard_media_worker_busy_microseconds_total{worker=\"1\"}"));
        assert_eq!(s["switchboard_trunk_registered{trunk=\"carrier\"}"], 1.0);
        assert_eq!(s["switchboard_trunk_registered{trunk=\"backup\"}"], 0.0);
        assert_eq!(s["switchboard_trunk_up{trunk=\"carrier\"}"], 1.0);
        assert_eq!(s["switchboard_trunk_up{trunk=\"backup\"}"], 0.0);
        assert_eq!(s["switchboard_trunk_calls{trunk=\"carrier\"}"], 1.0);
        assert_eq!(
            s["switchboard_trunk_attempts_total{trunk=\"backup\",result=\"5xx\"}"],
            1.0
        );
        assert_eq!(
            s["switchboard_trunk_attempts_total{trunk=\"carrier\",result=\"answered\"}"],
            0.0
        );
    }

    /// Two trunks: `carrier` registered with a call up, `backup` down after a 503.
    fn trunk_sample() -> Vec<crate::sip::trunks::TrunkStatus> {
        use crate::config::Config;
        use crate::sip::register::RegistrationState;
        use crate::sip::trunks::Trunks;
        let c = Config::from_toml_str(
            "t",
            "[[trunks]]\nname = \"carrier\"\nproxy = \"sip:192.0.2.1\"\nregister = true\n\
             [[trunks]]\nname = \"backup\"\nproxy = \"sip:192.0.2.2\"\n",
        )
        .unwrap();
        let trunks = Trunks::new(&c.trunks).unwrap();
        let now = std::time::Instant::now();
        let until = now + std::time::Duration::from_secs(60);
        trunks.set_registration("carrier", RegistrationState::Registered { until });
        let _held = trunks.route("carrier", "1", now).unwrap();
        trunks.report("backup", 503, Some(30), now);
        trunks.status(now)
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape_label(r#"a"b\c"#), r#"a\"b\\c"#);
        assert_eq!(escape_label("x\ny"), "x\\ny");
        let mut out = String::new();
        Writer(&mut out).sample("m", &[("l", "q\"\\\n")], 1);
        assert_eq!(out, "m{l=\"q\\\"\\\\\\n\"} 1\n");
    }

    proptest::proptest! {
        #[test]
        fn any_label_value_stays_on_one_valid_line(v in ".*") {
            let mut out = String::from("# TYPE m counter\n");
            Writer(&mut out).sample("m", &[("l", &v)], 5);
            let s = parse_exposition(&out);
            proptest::prop_assert_eq!(s.len(), 1);
        }
    }
}
