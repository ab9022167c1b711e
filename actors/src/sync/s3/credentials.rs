//! S3 credentials: from the standard AWS environment variables or an AWS-style INI file.
//!
//! Credentials never go into `hermes.json`: the node's configuration names the endpoint and
//! bucket, and the keys come from where every S3 tool looks for them, in the same order as the
//! AWS CLI: `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY` (/ `AWS_SESSION_TOKEN`) first, else the
//! credentials file (`~/.aws/credentials`, or `AWS_SHARED_CREDENTIALS_FILE`, or the path given),
//! section `[profile]` (`AWS_PROFILE`, else `default`).

use super::S3Error;
use std::fmt;
use std::path::{Path, PathBuf};
use zeroize::Zeroize;

/// An access key pair, with an optional session token (temporary STS credentials).
///
/// `Debug` prints the access key id only; the secret and the token are wiped on drop.
#[derive(Clone)]
pub struct S3Credentials {
    /// Access key id (not secret: it names the key in server logs).
    pub access_key_id: String,
    /// Secret access key.
    pub secret_access_key: String,
    /// Session token of temporary credentials; presigned URLs then stop working when it expires.
    pub session_token: Option<String>,
}

impl fmt::Debug for S3Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3Credentials")
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"<redacted>")
            .field(
                "session_token",
                &self.session_token.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

impl Drop for S3Credentials {
    fn drop(&mut self) {
        self.secret_access_key.zeroize();
        if let Some(t) = &mut self.session_token {
            t.zeroize();
        }
    }
}

const ENV_KEY: &str = "AWS_ACCESS_KEY_ID";
const ENV_SECRET: &str = "AWS_SECRET_ACCESS_KEY";
const ENV_TOKEN: &str = "AWS_SESSION_TOKEN";
const ENV_PROFILE: &str = "AWS_PROFILE";
const ENV_FILE: &str = "AWS_SHARED_CREDENTIALS_FILE";
/// Larger credentials files are refused rather than read (a wrong path pointing at a big file).
const MAX_FILE_LEN: u64 = 1 << 20;

impl S3Credentials {
    /// A key pair given directly (tests, embedding applications with their own secret store).
    pub fn new(access_key_id: impl Into<String>, secret_access_key: impl Into<String>) -> Self {
        S3Credentials {
            access_key_id: access_key_id.into(),
            secret_access_key: secret_access_key.into(),
            session_token: None,
        }
    }

    /// `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY` / `AWS_SESSION_TOKEN` first, else the
    /// AWS-style INI credentials file `file` (default `AWS_SHARED_CREDENTIALS_FILE`, else
    /// `~/.aws/credentials`), section `profile` (default `AWS_PROFILE`, else `default`).
    ///
    /// # Errors
    /// [`S3Error::Credentials`] naming the variable, file or section at fault: only one of the
    /// two key variables set, a file that cannot be read, a missing section, a section without
    /// `aws_access_key_id` or `aws_secret_access_key`.
    pub fn load(file: Option<&Path>, profile: Option<&str>) -> Result<Self, S3Error> {
        Self::load_with(|name| std::env::var(name).ok(), file, profile)
    }

    /// [`S3Credentials::load`] with the environment given as a function (testable without
    /// touching the process environment).
    fn load_with(
        env: impl Fn(&str) -> Option<String>,
        file: Option<&Path>,
        profile: Option<&str>,
    ) -> Result<Self, S3Error> {
        let var = |name: &str| env(name).filter(|v| !v.is_empty());
        match (var(ENV_KEY), var(ENV_SECRET)) {
            (Some(key), Some(secret)) => {
                return Ok(S3Credentials {
                    access_key_id: key,
                    secret_access_key: secret,
                    session_token: var(ENV_TOKEN),
                })
            }
            (Some(_), None) => {
                return Err(S3Error::Credentials(format!(
                    "{ENV_KEY} is set but {ENV_SECRET} is not; set both, or neither to use the \
                     credentials file"
                )))
            }
            (None, Some(_)) => {
                return Err(S3Error::Credentials(format!(
                    "{ENV_SECRET} is set but {ENV_KEY} is not; set both, or neither to use the \
                     credentials file"
                )))
            }
            (None, None) => {}
        }
        let path = match file {
            Some(p) => p.to_path_buf(),
            None => match var(ENV_FILE) {
                Some(p) => PathBuf::from(p),
                None => match var("HOME") {
                    Some(home) => Path::new(&home).join(".aws").join("credentials"),
                    None => {
                        return Err(S3Error::Credentials(format!(
                            "no S3 credentials: {ENV_KEY}/{ENV_SECRET} are not set, and HOME is \
                             not set to find ~/.aws/credentials"
                        )))
                    }
                },
            },
        };
        let profile = match profile {
            Some(p) => p.to_owned(),
            None => var(ENV_PROFILE).unwrap_or_else(|| "default".into()),
        };
        let text = read_small(&path).map_err(|e| {
            S3Error::Credentials(format!(
                "no S3 credentials: {ENV_KEY}/{ENV_SECRET} are not set, and the credentials file \
                 {} cannot be read: {e}",
                path.display()
            ))
        })?;
        from_ini(&text, &profile).map_err(|what| {
            S3Error::Credentials(format!(
                "credentials file {}, section [{profile}]: {what}",
                path.display()
            ))
        })
    }
}

fn read_small(path: &Path) -> std::io::Result<String> {
    let len = std::fs::metadata(path)?.len();
    if len > MAX_FILE_LEN {
        return Err(std::io::Error::other(format!(
            "{len} bytes, larger than any credentials file ({MAX_FILE_LEN})"
        )));
    }
    std::fs::read_to_string(path)
}

/// Parses the AWS INI format: `[section]` headers, `key = value` lines, `#`/`;` comments.
/// In the credentials file a profile's section is its bare name; `[profile name]` (the config
/// file's form) is accepted too.
fn from_ini(text: &str, profile: &str) -> Result<S3Credentials, String> {
    let mut in_section = false;
    let mut found = false;
    let (mut key, mut secret, mut token) = (None, None, None);
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            let name = name.trim();
            let name = name.strip_prefix("profile ").map_or(name, str::trim);
            in_section = name == profile;
            found |= in_section;
            continue;
        }
        if !in_section {
            continue;
        }
        let Some((k, v)) = line.split_once('=') else {
            continue;
        };
        let v = v.trim().to_owned();
        match k.trim().to_ascii_lowercase().as_str() {
            "aws_access_key_id" => key = Some(v),
            "aws_secret_access_key" => secret = Some(v),
            "aws_session_token" => token = Some(v),
            _ => {}
        }
    }
    if !found {
        return Err("no such section".into());
    }
    let missing = |what: &str| format!("no {what} in the section");
    let key = key
        .filter(|k| !k.is_empty())
        .ok_or_else(|| missing("aws_access_key_id"))?;
    let secret = secret
        .filter(|s| !s.is_empty())
        .ok_or_else(|| missing("aws_secret_access_key"))?;
    Ok(S3Credentials {
        access_key_id: key,
        secret_access_key: secret,
        session_token: token.filter(|t| !t.is_empty()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = "# comment\n[default]\naws_access_key_id = AKD\n\
                        aws_secret_access_key=SKD\n\n[profile other]\nAWS_ACCESS_KEY_ID = AKO\n\
                        aws_secret_access_key = SKO\naws_session_token = TOK\n[broken]\n\
                        aws_access_key_id = AKB\n";

    fn env<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |n| {
            vars.iter()
                .find(|(k, _)| *k == n)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn sections_keys_and_tokens() {
        let c = from_ini(FILE, "default").unwrap();
        assert_eq!(
            (c.access_key_id.as_str(), c.secret_access_key.as_str()),
            ("AKD", "SKD")
        );
        assert_eq!(c.session_token, None);
        let c = from_ini(FILE, "other").unwrap();
        assert_eq!(c.access_key_id, "AKO");
        assert_eq!(c.session_token.as_deref(), Some("TOK"));
        assert_eq!(from_ini(FILE, "nope").unwrap_err(), "no such section");
        assert!(from_ini(FILE, "broken")
            .unwrap_err()
            .contains("aws_secret_access_key"));
    }

    #[test]
    fn environment_wins_and_half_set_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("creds");
        std::fs::write(&path, FILE).unwrap();
        let both = [(ENV_KEY, "AKE"), (ENV_SECRET, "SKE"), (ENV_TOKEN, "T")];
        let c = S3Credentials::load_with(env(&both), Some(&path), None).unwrap();
        assert_eq!(c.access_key_id, "AKE");
        assert_eq!(c.session_token.as_deref(), Some("T"));
        let half = [(ENV_KEY, "AKE")];
        let e = S3Credentials::load_with(env(&half), Some(&path), None).unwrap_err();
        assert!(e.to_string().contains(ENV_SECRET), "{e}");
        let prof = [(ENV_PROFILE, "other")];
        let c = S3Credentials::load_with(env(&prof), Some(&path), None).unwrap();
        assert_eq!(c.access_key_id, "AKO");
        // An explicit profile beats AWS_PROFILE.
        let c = S3Credentials::load_with(env(&prof), Some(&path), Some("default")).unwrap();
        assert_eq!(c.access_key_id, "AKD");
        // The default file is found through HOME.
        std::fs::create_dir(dir.path().join(".aws")).unwrap();
        std::fs::write(dir.path().join(".aws/credentials"), FILE).unwrap();
        let home = [("HOME", dir.path().to_str().unwrap())];
        let c = S3Credentials::load_with(env(&home), None, None).unwrap();
        assert_eq!(c.access_key_id, "AKD");
    }

    #[test]
    fn debug_hides_the_secret() {
        let mut c = S3Credentials::new("AKID", "very-secret");
        c.session_token = Some("tok-secret".into());
        let d = format!("{c:?}");
        assert!(d.contains("AKID"));
        assert!(
            !d.contains("very-secret") && !d.contains("tok-secret"),
            "{d}"
        );
    }
}
