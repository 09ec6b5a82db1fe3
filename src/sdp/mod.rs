//! SDP (RFC 8866) model, parser, printer and RFC 3264 offer/answer negotiation.
