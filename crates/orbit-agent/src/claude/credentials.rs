//! The user's Claude login, shared with Orbit's CLIs, and the check at start that the CLIs
//! will have some credentials at all.
//!
//! Each conversation's CLI gets a `CLAUDE_CONFIG_DIR` of its own, apart from the user's
//! `~/.claude`, so Orbit's sessions, settings and history never mix with the user's. The one
//! thing shared is the login: the user's `.credentials.json` is linked into each
//! conversation's directory, so a token the CLI refreshes is refreshed for both.

use std::path::{Path, PathBuf};

/// The file where the CLI keeps a login made with `claude` (`/login`) on Linux.
pub const CREDENTIALS_FILE: &str = ".credentials.json";

/// Environment variables that give the CLI credentials, or send it to a provider that has
/// its own (Bedrock, Vertex).
const CREDENTIAL_VARIABLES: &[&str] = &[
    "ANTHROPIC_API_KEY",
    "ANTHROPIC_AUTH_TOKEN",
    "CLAUDE_CODE_OAUTH_TOKEN",
    "CLAUDE_CODE_USE_BEDROCK",
    "CLAUDE_CODE_USE_VERTEX",
];

/// The user's own CLI configuration directory: `CLAUDE_CONFIG_DIR` of the server's
/// environment when set, else `~/.claude`.
pub fn user_config_dir() -> Option<PathBuf> {
    match std::env::var_os("CLAUDE_CONFIG_DIR") {
        Some(dir) if !dir.is_empty() => Some(PathBuf::from(dir)),
        _ => std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".claude")),
    }
}

/// Where the CLIs will find credentials, as found at start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Found {
    /// An environment variable (its name).
    Variable(String),
    /// The user's login, linked into each conversation.
    Login(PathBuf),
    /// Nothing: every turn will fail until credentials are given.
    Nothing {
        /// The user's settings name an `apiKeyHelper`, which Orbit's CLIs do not read.
        unused_helper: Option<PathBuf>,
    },
}

/// Looks for credentials the way the CLI will: `env` (the server's environment with the
/// CLI's extra variables) and the user's login in `user_dir`.
pub fn find(env: &[(String, String)], user_dir: Option<&Path>) -> Found {
    let set = |name: &str| env.iter().any(|(key, value)| key == name && !value.trim().is_empty());
    if let Some(name) = CREDENTIAL_VARIABLES.iter().find(|name| set(name)) {
        return Found::Variable((*name).to_owned());
    }
    let Some(user_dir) = user_dir else { return Found::Nothing { unused_helper: None } };
    let login = user_dir.join(CREDENTIALS_FILE);
    if login.is_file() {
        return Found::Login(login);
    }
    let settings = user_dir.join("settings.json");
    let helper = std::fs::read_to_string(&settings)
        .ok()
        .and_then(|text| serde_json::from_str::<serde_json::Value>(&text).ok())
        .is_some_and(|settings| settings["apiKeyHelper"].is_string());
    Found::Nothing { unused_helper: helper.then_some(settings) }
}

impl Found {
    /// A line for the server's log at start; `None` when all is well.
    pub fn warning(&self) -> Option<String> {
        let Found::Nothing { unused_helper } = self else { return None };
        let helper = unused_helper.as_ref().map_or(String::new(), |settings| {
            format!(
                " ({} names an apiKeyHelper, but Orbit's CLIs keep settings of their own and do not run it)",
                settings.display()
            )
        });
        Some(format!(
            "no credentials for the model: every chat and task will fail until you set ANTHROPIC_API_KEY (or ANTHROPIC_AUTH_TOKEN) in the server's environment, or log in once with the `claude` CLI as this user so that ~/.claude/{CREDENTIALS_FILE} exists, and restart the server{helper}"
        ))
    }
}

/// Links the user's login into a conversation's directory, when there is one and the
/// directory has none yet.
pub async fn share_login(user_dir: &Path, conversation_dir: &Path) {
    let login = user_dir.join(CREDENTIALS_FILE);
    let link = conversation_dir.join(CREDENTIALS_FILE);
    if !tokio::fs::try_exists(&login).await.unwrap_or(false)
        || tokio::fs::symlink_metadata(&link).await.is_ok()
    {
        return;
    }
    if let Err(err) = tokio::fs::symlink(&login, &link).await {
        tracing::warn!(login = %login.display(), error = %err, "could not share the user's Claude login with a conversation");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }

    #[test]
    fn finds_variables_then_a_login_and_says_what_to_do_without_either() {
        let dir = tempfile::tempdir().unwrap();
        let found = find(&vars(&[("ANTHROPIC_API_KEY", "sk")]), Some(dir.path()));
        assert_eq!(found, Found::Variable("ANTHROPIC_API_KEY".into()));
        assert!(found.warning().is_none());
        assert_eq!(
            find(&vars(&[("ANTHROPIC_API_KEY", " ")]), Some(dir.path())),
            Found::Nothing { unused_helper: None },
            "a blank key is no key"
        );
        std::fs::write(dir.path().join("settings.json"), r#"{"apiKeyHelper": "pass x"}"#).unwrap();
        let nothing = find(&[], Some(dir.path()));
        let warning = nothing.warning().unwrap();
        assert!(
            warning.contains("ANTHROPIC_API_KEY") && warning.contains("apiKeyHelper"),
            "{warning}"
        );
        std::fs::write(dir.path().join(CREDENTIALS_FILE), "{}").unwrap();
        assert_eq!(find(&[], Some(dir.path())), Found::Login(dir.path().join(CREDENTIALS_FILE)));
    }
}
