//! Enterprises: registration, contact changes and reads. One transaction each, no peer.

use subsidy_common::Uscc;
use subsidy_common::auth::Tenant;
use subsidy_proto::application as pb;

use super::{Begun, Caller, Workflow, op};
use crate::error::ApplicationError;
use crate::storage::EnterpriseRow;
use crate::wire::enterprise_to_proto;

/// A validated enterprise registration.
#[derive(Clone, Debug)]
pub struct RegisterEnterprise {
    /// USCC.
    pub uscc: Uscc,
    /// Name.
    pub name: String,
    /// E-mail.
    pub contact_email: String,
    /// Telephone or empty.
    pub contact_phone: String,
    /// Division code.
    pub registration_division_code: String,
}

impl Workflow {
    /// Registers an enterprise.
    pub async fn register_enterprise(
        &self,
        cmd: RegisterEnterprise,
        caller: &Caller,
    ) -> Result<pb::RegisterEnterpriseResponse, ApplicationError> {
        if !caller.tenant.sees(cmd.uscc.as_str()) {
            return Err(ApplicationError::EnterpriseNotBound {
                uscc: cmd.uscc.as_str().to_owned(),
            });
        }
        let mut tx = match self.begin_request(caller, op::REGISTER_ENTERPRISE).await? {
            Begun::Fresh(tx) => tx,
            Begun::Replay(response) => return Ok(response),
        };
        let now = self.store.now_us(&mut tx).await?;
        let row = EnterpriseRow {
            uscc: cmd.uscc.as_str().to_owned(),
            name: cmd.name,
            contact_email: cmd.contact_email,
            contact_phone: cmd.contact_phone,
            registration_division_code: cmd.registration_division_code,
            created_us: now,
            updated_us: now,
        };
        if !self.store.insert_enterprise(&mut tx, &row).await? {
            return Err(ApplicationError::EnterpriseAlreadyRegistered { uscc: row.uscc });
        }
        self.audit(&mut tx, caller, &[&row.uscc], now).await?;
        let response = pb::RegisterEnterpriseResponse {
            enterprise: Some(enterprise_to_proto(&row)),
        };
        self.finish_request(tx, caller, response).await
    }

    /// Replaces an enterprise's contact details.
    pub async fn update_enterprise_contact(
        &self,
        uscc: &Uscc,
        email: &str,
        phone: &str,
        caller: &Caller,
    ) -> Result<pb::UpdateEnterpriseContactResponse, ApplicationError> {
        if !caller.tenant.sees(uscc.as_str()) {
            return Err(ApplicationError::enterprise_not_found(uscc.as_str()));
        }
        let mut tx = match self.begin_request(caller, op::UPDATE_CONTACT).await? {
            Begun::Fresh(tx) => tx,
            Begun::Replay(response) => return Ok(response),
        };
        let row = self
            .store
            .update_enterprise_contact(&mut tx, uscc.as_str(), email, phone)
            .await?
            .ok_or_else(|| ApplicationError::enterprise_not_found(uscc.as_str()))?;
        self.audit(&mut tx, caller, &[uscc.as_str()], row.updated_us)
            .await?;
        let response = pb::UpdateEnterpriseContactResponse {
            enterprise: Some(enterprise_to_proto(&row)),
        };
        self.finish_request(tx, caller, response).await
    }

    /// One enterprise.
    pub async fn enterprise(
        &self,
        uscc: &Uscc,
        tenant: &Tenant,
    ) -> Result<EnterpriseRow, ApplicationError> {
        if !tenant.sees(uscc.as_str()) {
            return Err(ApplicationError::enterprise_not_found(uscc.as_str()));
        }
        let mut conn = self.store.read().await?;
        self.store
            .get_enterprise(&mut conn, uscc.as_str())
            .await?
            .ok_or_else(|| ApplicationError::enterprise_not_found(uscc.as_str()))
    }

    /// At most `limit` enterprises after USCC `after` whose division code starts with
    /// `prefix`, in USCC order.
    pub async fn enterprises(
        &self,
        prefix: &str,
        after: &str,
        limit: i64,
        tenant: &Tenant,
    ) -> Result<Vec<EnterpriseRow>, ApplicationError> {
        let mut conn = self.store.read().await?;
        let only: Option<Vec<String>> = tenant
            .restriction()
            .map(|own| own.iter().cloned().collect());
        Ok(self
            .store
            .list_enterprises(&mut conn, prefix, after, limit, only.as_deref())
            .await?)
    }
}
