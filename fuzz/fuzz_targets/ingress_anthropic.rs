//! Client bodies for `POST /v1/messages` and `/v1/messages/count_tokens`: decoding must not
//! panic, and a decoded request must encode for every upstream without panicking (see
//! `encode_everywhere`).
#![no_main]

use libfuzzer_sys::fuzz_target;
use sluice_wire::anthropic;

fuzz_target!(|data: &[u8]| {
    if let Ok(req) = anthropic::decode_chat_request(data) {
        sluice_fuzz::encode_everywhere(&req);
    }
    if let Ok(req) = anthropic::decode_count_tokens_request(data) {
        sluice_fuzz::encode_everywhere(&req);
    }
});
