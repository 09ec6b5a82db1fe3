//! Tests of the SDP module: parser and printer, negotiator, property-based round trips.

mod codecs;
mod extmap;
mod negotiate;
mod parse;
mod roundtrip;
mod srtp;
mod webrtc;

/// Turns readable SDP (LF, indentation-free) into wire form with CRLF.
pub(super) fn crlf(text: &str) -> String {
    text.lines().map(|l| format!("{l}\r\n")).collect()
}

/// A Linphone-style offer: many codecs, several telephone-event rates, a video stream.
pub(super) const LINPHONE: &str = "v=0
o=alice 3425 2208 IN IP4 192.168.1.10
s=Talk
c=IN IP4 192.168.1.10
t=0 0
a=rtcp-xr:rcvr-rtt=all:10000 stat-summary=loss,dup,jitt,TTL voip-metrics
m=audio 7078 RTP/AVP 96 97 98 0 8 18 101 99 100
a=rtpmap:96 opus/48000/2
a=fmtp:96 useinbandfec=1
a=rtpmap:97 speex/16000
a=fmtp:97 vbr=on
a=rtpmap:98 speex/8000
a=fmtp:98 vbr=on
a=fmtp:18 annexb=yes
a=rtpmap:101 telephone-event/48000
a=rtpmap:99 telephone-event/16000
a=rtpmap:100 telephone-event/8000
a=rtcp-fb:* trr-int 1000
m=video 9078 RTP/AVP 96 97
a=rtpmap:96 VP8/90000
a=rtpmap:97 H264/90000
a=fmtp:97 profile-level-id=42801F
a=rtcp-fb:* ccm fir
";

/// A FreeSWITCH-style offer: PCMA first, CN, explicit a=rtcp.
pub(super) const FREESWITCH: &str = "v=0
o=FreeSWITCH 1700000000 1700000001 IN IP4 10.0.0.5
s=FreeSWITCH
c=IN IP4 10.0.0.5
t=0 0
m=audio 16384 RTP/AVP 8 0 101 13
a=rtpmap:8 PCMA/8000
a=rtpmap:0 PCMU/8000
a=rtpmap:101 telephone-event/8000
a=fmtp:101 0-16
a=rtpmap:13 CN/8000
a=ptime:20
a=sendrecv
a=rtcp:16385 IN IP4 10.0.0.5
";

/// An Asterisk-style offer: PCMU first, GSM, maxptime, no ptime.
pub(super) const ASTERISK: &str = "v=0
o=- 1234567890 1234567890 IN IP4 203.0.113.7
s=Asterisk
c=IN IP4 203.0.113.7
t=0 0
m=audio 10000 RTP/AVP 0 8 3 101
a=rtpmap:0 PCMU/8000
a=rtpmap:8 PCMA/8000
a=rtpmap:3 GSM/8000
a=rtpmap:101 telephone-event/8000
a=fmtp:101 0-16
a=maxptime:150
a=sendrecv
";
