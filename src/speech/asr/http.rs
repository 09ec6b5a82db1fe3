//! The transcription-server engine: one OpenAI-compatible `POST /v1/audio/transcriptions`
//! per utterance (multipart form with the audio as a WAV file), answered by `{"text": ...}`.
//!
//! Each call runs its request on a small runtime in a thread of its own and waits for it, so
//! it blocks only the thread that asked, as the blocking [`super::Asr::recognize`] promises.

use std::io::Cursor;
use std::time::Duration;

use axum::body::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, USER_AGENT};
use hyper::{Method, Request, Uri};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use super::{AsrConfig, AsrError};
use crate::rtp::types::ClockRate;

const PATH: &str = "/v1/audio/transcriptions";
/// Largest answer read: a transcript of minutes is a few kilobytes.
const MAX_ANSWER: usize = 1 << 20;
/// How much of an error answer is kept for the message.
const MAX_ERROR_TEXT: usize = 300;

/// The transcription endpoint under the base `url`.
pub(super) fn endpoint(url: &str) -> Result<Uri, AsrError> {
    let base = url.trim_end_matches('/');
    crate::webhook::parse_url(base).map_err(|e| AsrError::Config(format!("url: {e}")))?;
    format!("{base}{PATH}")
        .parse()
        .map_err(|_| AsrError::Config(format!("url {url:?} is not a base URL")))
}

/// A transcription server and what to ask it for.
#[derive(Debug)]
pub(super) struct HttpEngine {
    uri: Uri,
    model: String,
    language: String,
    key: Option<String>,
    timeout: Duration,
}

impl HttpEngine {
    pub(super) fn new(c: &AsrConfig) -> Result<HttpEngine, AsrError> {
        let key = if c.api_key_env.is_empty() {
            None
        } else {
            let key = std::env::var(&c.api_key_env).map_err(|_| {
                AsrError::Config(format!("api_key_env: {} is not set", c.api_key_env))
            })?;
            Some(key)
        };
        Ok(HttpEngine {
            uri: endpoint(&c.url)?,
            model: c.model.clone(),
            language: c.language.clone(),
            key,
            timeout: Duration::from_millis(c.timeout_ms),
        })
    }

    /// The server's transcript of `samples`.
    pub(super) fn transcribe(&self, samples: &[i16], rate: ClockRate) -> Result<String, AsrError> {
        let wav = wav(samples, rate)?;
        let boundary = format!(
            "switchboard-{:016x}{:016x}",
            fastrand::u64(..),
            fastrand::u64(..)
        );
        let body = multipart(&boundary, &wav, &self.fields());
        let mut request = Request::builder()
            .method(Method::POST)
            .uri(self.uri.clone())
            .header(
                CONTENT_TYPE,
                format!("multipart/form-data; boundary={boundary}"),
            )
            .header(USER_AGENT, "switchboard");
        if let Some(key) = &self.key {
            request = request.header(AUTHORIZATION, format!("Bearer {key}"));
        }
        let request = request
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| AsrError::Http(e.to_string()))?;
        let timeout = self.timeout;
        let exchange = move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| AsrError::Http(format!("runtime: {e}")))?;
            runtime.block_on(async {
                let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
                let exchange = async {
                    let response = client
                        .request(request)
                        .await
                        .map_err(|e| AsrError::Http(crate::speech::error_chain(&e)))?;
                    let status = response.status();
                    let body = Limited::new(response.into_body(), MAX_ANSWER)
                        .collect()
                        .await
                        .map_err(|e| AsrError::Http(format!("reading the answer: {e}")))?
                        .to_bytes();
                    Ok::<_, AsrError>((status, body))
                };
                tokio::time::timeout(timeout, exchange)
                    .await
                    .map_err(|_| AsrError::Timeout(timeout))?
            })
        };
        // A thread of its own: a runtime cannot be driven from a thread that is already
        // running one, and this keeps a call from async code a slow call, not a panic.
        let (status, answer) = std::thread::scope(|s| s.spawn(exchange).join())
            .map_err(|_| AsrError::Http("the request thread panicked".into()))??;
        if !status.is_success() {
            let text = String::from_utf8_lossy(&answer);
            let text: String = text.trim().chars().take(MAX_ERROR_TEXT).collect();
            return Err(AsrError::Status {
                status: status.as_u16(),
                body: text,
            });
        }
        parse_answer(&answer)
    }

    fn fields(&self) -> Vec<(&'static str, &str)> {
        let mut fields = vec![("model", self.model.as_str()), ("response_format", "json")];
        if !self.language.is_empty() {
            fields.push(("language", self.language.as_str()));
        }
        fields
    }
}

fn parse_answer(answer: &[u8]) -> Result<String, AsrError> {
    #[derive(serde::Deserialize)]
    struct Answer {
        text: String,
    }
    serde_json::from_slice::<Answer>(answer)
        .map(|a| a.text.trim().to_string())
        .map_err(|e| {
            let start: String = String::from_utf8_lossy(answer).chars().take(80).collect();
            AsrError::BadResponse(format!("{e} in {start:?}"))
        })
}

/// `samples` as a 16-bit mono WAV file.
fn wav(samples: &[i16], rate: ClockRate) -> Result<Vec<u8>, AsrError> {
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: rate.hz(),
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let audio = |e: hound::Error| AsrError::Audio(e.to_string());
    let mut out = Cursor::new(Vec::with_capacity(44 + samples.len() * 2));
    let mut writer = hound::WavWriter::new(&mut out, spec).map_err(audio)?;
    let mut pcm = writer.get_i16_writer(
        u32::try_from(samples.len()).map_err(|_| AsrError::Audio("utterance too long".into()))?,
    );
    for &s in samples {
        pcm.write_sample(s);
    }
    pcm.flush().map_err(audio)?;
    writer.finalize().map_err(audio)?;
    Ok(out.into_inner())
}

/// A `multipart/form-data` body: the WAV as the `file` part, then the text fields.
fn multipart(boundary: &str, wav: &[u8], fields: &[(&str, &str)]) -> Vec<u8> {
    let mut body = Vec::with_capacity(wav.len() + 512);
    body.extend_from_slice(
        format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"audio.wav\"\r\nContent-Type: audio/wav\r\n\r\n"
        )
        .as_bytes(),
    );
    body.extend_from_slice(wav);
    body.extend_from_slice(b"\r\n");
    for (name, value) in fields {
        body.extend_from_slice(
            format!("--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n")
                .as_bytes(),
        );
    }
    body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    body
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_endpoint_is_under_the_base_url_and_only_http() {
        assert_eq!(
            endpoint("http://127.0.0.1:8000/").unwrap().to_string(),
            "http://127.0.0.1:8000/v1/audio/transcriptions"
        );
        assert!(endpoint("https://127.0.0.1:8000").is_err());
        assert!(endpoint("127.0.0.1:8000").is_err());
        assert!(endpoint("").is_err());
    }

    #[test]
    fn the_wav_states_rate_and_length() {
        let samples: Vec<i16> = (0..800).map(|i| (i * 7) as i16).collect();
        let bytes = wav(&samples, ClockRate::HZ_8000).unwrap();
        let reader = hound::WavReader::new(Cursor::new(bytes)).unwrap();
        assert_eq!(reader.spec().sample_rate, 8000);
        assert_eq!(reader.spec().channels, 1);
        let back: Vec<i16> = reader.into_samples::<i16>().map(Result::unwrap).collect();
        assert_eq!(back, samples);
    }

    #[test]
    fn an_answer_without_text_is_refused() {
        assert_eq!(
            parse_answer(br#"{"text":" Support. "}"#).unwrap(),
            "Support."
        );
        assert!(matches!(
            parse_answer(b"<html>"),
            Err(AsrError::BadResponse(_))
        ));
        assert!(matches!(
            parse_answer(br#"{"txt":"x"}"#),
            Err(AsrError::BadResponse(_))
        ));
    }
}
