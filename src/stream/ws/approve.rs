//! The `approval_response` frame: deciding a tool call that waits for
//! approval, as `POST /v1/runs/{id}/approvals/{approval_id}` does.

use serde_json::Value;

use super::{protocol, Conn, Overflow, Refusal};

impl Conn<'_> {
    /// Decides an approval, as the REST route does (a run slot of this
    /// key first); the run's `approval_response` event is the answer.
    pub(super) async fn approval_response(
        &mut self,
        a: protocol::ApprovalAnswer,
        rid: Option<&Value>,
    ) -> Result<(), Overflow> {
        let decision = match a.decision.as_str() {
            "approve" => crate::domain::ApprovalDecision::Approve,
            "deny" => crate::domain::ApprovalDecision::Deny,
            _ => {
                let e = Refusal::validation("decision: must be `approve` or `deny`");
                return self.reply_error(&e, rid, None);
            }
        };
        let verdict = crate::store::ApprovalVerdict {
            decision,
            decided_by: Some(self.key.id.to_string()),
            reason: a.reason.filter(|r| !r.trim().is_empty()),
        };
        let account = (self.state.keys)
            .account_limits(self.state.store.as_ref(), self.account())
            .await;
        let slot = match self.state.edge.start_run(&self.key, account).await {
            Ok((slot, _)) => slot,
            Err(e) => {
                let e = Refusal::from(e);
                let frame = protocol::error_retry(e.code, &e.message, rid, e.retry_after);
                return self.outbox.reply(frame);
            }
        };
        let decided = self.state.runtime.decide_approval(
            self.account(),
            &a.run_id,
            &a.approval_id,
            verdict,
            Some(slot),
        );
        match decided.await {
            Ok(_) => Ok(()),
            Err(e) => self.reply_error(&e.into(), rid, None),
        }
    }
}
