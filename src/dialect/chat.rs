//! placeholder
use crate::dialect::{Ctx, Encoder, Plan};
use crate::error::{Error, Protocol};
pub struct ChatPlan;
pub struct ChatEncoder;
pub fn translate(_b: &mut [u8], _c: &Ctx<'_>) -> Result<ChatPlan, Error> {
    Err(Error::bad_request("x"))
}
impl Plan for ChatPlan {
    type Encoder = ChatEncoder;
    fn protocol(&self) -> Protocol {
        Protocol::OpenAi
    }
    fn upstream(&self) -> &crate::upstream::request::UpstreamRequest {
        unimplemented!()
    }
    fn stream(&self) -> bool {
        true
    }
    fn encoder(&self) -> ChatEncoder {
        ChatEncoder
    }
    fn render(&self, _c: &crate::upstream::collect::Collected) -> Vec<u8> {
        vec![]
    }
}
impl Encoder for ChatEncoder {
    fn begin(&mut self, _o: &mut bytes::BytesMut) {}
    fn delta(&mut self, _d: &crate::upstream::events::Delta<'_>, _o: &mut bytes::BytesMut) {}
    fn keepalive(&mut self, _o: &mut bytes::BytesMut) {}
    fn fail(&mut self, _e: &Error, _o: &mut bytes::BytesMut) {}
}
