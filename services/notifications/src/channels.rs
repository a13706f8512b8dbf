//! Where a notification goes: cozy's channels, tried in the order the sender prefers, mail
//! always last. Mail is the jobs service's `sendmail`. Push to phones (FCM, APNs) and SMS need
//! the platforms' credentials and a provider, which no Cocon deployment has yet: their channel
//! exists behind [`Unreachable`] and says so, and the notification falls back to mail.

/// One channel a notification can be sent on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Channel {
    Mobile,
    Sms,
    Mail,
}

impl Channel {
    pub fn parse(name: &str) -> Option<Channel> {
        match name {
            "mobile" => Some(Channel::Mobile),
            "sms" => Some(Channel::Sms),
            "mail" => Some(Channel::Mail),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Mobile => "mobile",
            Channel::Sms => "sms",
            Channel::Mail => "mail",
        }
    }

    /// The channels to try: the preferred ones known, in order, then mail if absent.
    pub fn order(preferred: &[String]) -> Vec<Channel> {
        let mut order: Vec<Channel> = Vec::new();
        for channel in preferred.iter().filter_map(|p| Channel::parse(p)) {
            if !order.contains(&channel) {
                order.push(channel);
            }
        }
        if !order.contains(&Channel::Mail) {
            order.push(Channel::Mail);
        }
        order
    }
}

/// A channel this server cannot send on.
pub trait Unreachable {
    /// Why, for the logs.
    fn why(&self) -> &'static str;
}

impl Unreachable for Channel {
    fn why(&self) -> &'static str {
        match self {
            Channel::Mobile => {
                "push notifications need FCM/APNs credentials, which this server does not have: falling back"
            }
            Channel::Sms => "SMS needs a provider, which this server does not have: falling back",
            Channel::Mail => "mail is always available",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_mail_is_always_the_last_resort() {
        let order = Channel::order(&["mobile".into(), "carrier-pigeon".into(), "mobile".into()]);
        assert_eq!(order, [Channel::Mobile, Channel::Mail]);
        assert_eq!(
            Channel::order(&["mail".into(), "sms".into()]),
            [Channel::Mail, Channel::Sms]
        );
        assert_eq!(Channel::order(&[]), [Channel::Mail]);
    }
}
