//! placeholder
use crate::dialect::{Ctx, Encoder, Plan};
use crate::error::{Error, Protocol};
pub struct MessagesPlan;
pub struct MessagesEncoder;
pub fn translate(_b: &mut [u8], _c: &Ctx<'_>) -> Result<MessagesPlan, Error> {
    Err(Error::bad_request("x"))
}
impl Plan for MessagesPlan {
    type Encoder = MessagesEncoder;
    fn protocol(&self) -> Protocol {
        Protocol::Anthropic
    }
    fn upstream(&self) -> &crate::upstream::request::UpstreamRequest {
        unimplemented!()
    }
    fn stream(&self) -> bool {
        true
    }
    fn encoder(&self) -> MessagesEncoder {
        MessagesEncoder
    }
    fn render(&self, _c: &crate::upstream::collect::Collected) -> Vec<u8> {
        vec![]
    }
}
impl Encoder for MessagesEncoder {
    fn begin(&mut self, _o: &mut bytes::BytesMut) {}
    fn delta(&mut self, _d: &crate::upstream::events::Delta<'_>, _o: &mut bytes::BytesMut) {}
    fn keepalive(&mut self, _o: &mut bytes::BytesMut) {}
    fn fail(&mut self, _e: &Error, _o: &mut bytes::BytesMut) {}
}
pub fn count_tokens(_b: &mut [u8], _c: &Ctx<'_>) -> Result<Vec<u8>, Error> {
    Err(Error::bad_request("x"))
}
