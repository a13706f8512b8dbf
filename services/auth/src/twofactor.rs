//! Two-factor authentication with an authenticator app (TOTP, RFC 6238: SHA-1, 6 digits, 30 s
//! steps, one step of clock skew either way) and ten single-use recovery codes. A code is
//! accepted once: the step it belongs to is recorded with the session it opens.

use cocon_proto::auth::v1 as pb;
use cocon_proto::events::v1::{TwoFactorDisabled, TwoFactorEnabled, TwoFactorProposed, envelope::Payload};
use totp_rs::{Algorithm, TOTP};

use crate::secret;
use crate::session::{Origin, Proof, too_many};
use crate::store::InstanceRecord;
use crate::token;
use crate::{AuthError, AuthService};

const STEP_SECS: u64 = 30;
const RECOVERY_CODES: usize = 10;

fn totp(secret: Vec<u8>, domain: &str) -> Result<TOTP, AuthError> {
    TOTP::new(
        Algorithm::SHA1,
        6,
        1,
        STEP_SECS,
        secret,
        Some("Cocon".into()),
        format!("me@{domain}"),
    )
    .map_err(|e| AuthError::Corrupt(format!("TOTP: {e}")))
}

fn now_secs() -> u64 {
    token::now().max(0) as u64
}

/// The step of a 6-digit `code` around now, newer than `after`.
fn totp_step(totp: &TOTP, code: &str, after: u64) -> Option<u64> {
    let now = now_secs() / STEP_SECS;
    (now.saturating_sub(1)..=now + 1)
        .filter(|step| *step > after)
        .find(|step| secret::ct_eq(totp.generate(step * STEP_SECS).as_bytes(), code.as_bytes()))
}

/// Codes as people type them: spaces and dashes do not count, nor does case.
fn normalize(code: &str) -> String {
    code.chars()
        .filter(|c| !c.is_whitespace() && *c != '-')
        .map(|c| c.to_ascii_lowercase())
        .collect()
}

fn recovery_code() -> String {
    const ALPHABET: &[u8] = b"abcdefghjkmnpqrstuvwxyz23456789";
    let chars: String = (0..12)
        .map(|_| ALPHABET[rand::random_range(0..ALPHABET.len())] as char)
        .collect();
    format!("{}-{}-{}", &chars[..4], &chars[4..8], &chars[8..])
}

impl AuthService {
    fn open_secret(&self, record: &InstanceRecord, sealed_hex: &str) -> Result<Vec<u8>, AuthError> {
        let sealed = hex::decode(sealed_hex).map_err(|e| AuthError::Corrupt(e.to_string()))?;
        secret::open(&self.inner().master_key, &record.id, &sealed)
    }

    /// Checks a second factor against the instance's two-factor settings.
    pub(crate) fn check_second_factor(&self, record: &InstanceRecord, code: &str) -> Result<Option<Proof>, AuthError> {
        let Some(two_factor) = &record.two_factor else {
            return Ok(None);
        };
        let code = normalize(code);
        if code.len() == 6 && code.chars().all(|c| c.is_ascii_digit()) {
            let totp = totp(self.open_secret(record, &two_factor.secret)?, &record.domain)?;
            return Ok(totp_step(&totp, &code, two_factor.last_step).map(|step| Proof::Totp { step }));
        }
        let hash = secret::sha256_hex(&code);
        Ok(two_factor
            .recovery
            .iter()
            .any(|known| secret::ct_eq(known.as_bytes(), hash.as_bytes()))
            .then_some(Proof::Recovery { sha256: hash }))
    }

    pub async fn two_factor_status(&self, domain: &str) -> Result<pb::TwoFactorStatus, AuthError> {
        let record = self.lookup(domain).await?;
        Ok(pb::TwoFactorStatus {
            enabled: record.two_factor.is_some(),
            recovery_codes_left: record.two_factor.map_or(0, |t| t.recovery.len() as u32),
        })
    }

    /// A new secret to scan. It replaces an earlier proposal; two-factor stays as it was until
    /// a code confirms the new secret.
    pub async fn propose_two_factor(&self, domain: &str) -> Result<pb::ProposeTwoFactorResponse, AuthError> {
        let record = self.lookup(domain).await?;
        let _writer = self.stripe(&record.id).lock().await;
        let record = self.lookup(domain).await?;
        let bytes: [u8; 20] = rand::random();
        let totp = totp(bytes.to_vec(), &record.domain)?;
        let sealed = secret::seal(&self.inner().master_key, &record.id, &bytes);
        self.append_one(
            &record,
            "twofactor",
            "proposed",
            Payload::TwoFactorProposed(TwoFactorProposed {
                sealed_secret: sealed.into(),
            }),
        )
        .await?;
        Ok(pb::ProposeTwoFactorResponse {
            secret: totp.get_secret_base32(),
            otpauth_uri: totp.get_url(),
        })
    }

    /// Turns two-factor on with the proposed secret, once `code` shows the app has it (and
    /// `passphrase`, when given, that the person asks).
    pub async fn enable_two_factor(
        &self,
        domain: &str,
        code: &str,
        passphrase: Option<&pb::Passphrase>,
    ) -> Result<Vec<String>, AuthError> {
        let record = self.lookup(domain).await?;
        if passphrase.is_some() && !self.check_passphrase(&record, passphrase).await? {
            return Err(AuthError::BadProof("the passphrase is wrong".into()));
        }
        let _writer = self.stripe(&record.id).lock().await;
        let record = self.lookup(domain).await?;
        let Some(proposed) = &record.two_factor_proposed else {
            return Err(AuthError::InvalidPassphrase(
                "no secret to confirm: start the two-factor set-up first (POST /settings/twofactor)".into(),
            ));
        };
        let totp = totp(self.open_secret(&record, proposed)?, &record.domain)?;
        let Some(step) = totp_step(&totp, &normalize(code), 0) else {
            return Err(AuthError::WrongSecondFactor);
        };
        let codes: Vec<String> = (0..RECOVERY_CODES).map(|_| recovery_code()).collect();
        let hashes = codes
            .iter()
            .map(|c| {
                hex::decode(secret::sha256_hex(&normalize(c)))
                    .expect("hex of a digest")
                    .into()
            })
            .collect();
        self.append_one(
            &record,
            "twofactor",
            "enabled",
            Payload::TwoFactorEnabled(TwoFactorEnabled {
                recovery_code_sha256: hashes,
                totp_step: step,
            }),
        )
        .await?;
        tracing::info!(domain = %record.domain, "two-factor enabled");
        Ok(codes)
    }

    /// Turns two-factor off; the passphrase proves it is the person.
    pub async fn disable_two_factor(
        &self,
        domain: &str,
        passphrase: Option<&pb::Passphrase>,
    ) -> Result<pb::TwoFactorStatus, AuthError> {
        let record = self.lookup(domain).await?;
        if !self.check_passphrase(&record, passphrase).await? {
            return Err(AuthError::BadProof("the passphrase is wrong".into()));
        }
        let _writer = self.stripe(&record.id).lock().await;
        let record = self.lookup(domain).await?;
        self.append_one(
            &record,
            "twofactor",
            "disabled",
            Payload::TwoFactorDisabled(TwoFactorDisabled {}),
        )
        .await?;
        tracing::info!(domain = %record.domain, "two-factor disabled");
        Ok(pb::TwoFactorStatus::default())
    }

    /// The second step of a login: the first step's token and a code open the session.
    pub async fn login_two_factor(
        &self,
        req: &pb::LoginTwoFactorRequest,
        origin: &Origin,
    ) -> Result<pb::LoginResponse, AuthError> {
        let record = self.lookup(&req.domain).await?;
        let instance_secret = token::instance_secret(&self.inner().master_key, &record.id);
        let claims = token::verify_two_factor(&instance_secret, &req.two_factor_token, &record.domain)?;
        if claims.sub != record.id {
            return Err(AuthError::InvalidToken(
                "the two-factor step belongs to another instance".into(),
            ));
        }
        let device = self.known_device(&record, &req.device);
        let throttle = &self.inner().throttle;
        throttle
            .second_factor(&record.id, &claims.jti, device)
            .map_err(too_many)?;
        let _writer = self.stripe(&record.id).lock().await;
        // Under the lock: a code or a recovery code is spent by exactly one login.
        let record = self.lookup(&req.domain).await?;
        match self.check_second_factor(&record, &req.code)? {
            Some(proof) => {
                throttle.second_factor_passed(&record.id, &claims.jti, device);
                let session = self.open_session(&record, claims.long_run, origin, Some(proof)).await?;
                Ok(pb::LoginResponse {
                    session: Some(session),
                    two_factor_token: String::new(),
                    device_cookie: self.device_cookie(&record, device),
                })
            }
            None => {
                throttle.second_factor_failed(&record.id, &claims.jti, device);
                self.record_failure(&record, origin, "wrong_second_factor").await?;
                Err(AuthError::WrongSecondFactor)
            }
        }
    }
}
