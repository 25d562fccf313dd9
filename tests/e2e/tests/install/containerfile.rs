//! Reading a Containerfile (no container engine runs here) and the workspace it builds.

use std::collections::BTreeMap;

use serde_json::Value;

use super::repo;

/// One `FROM` and what follows it, with `ARG` defaults already known.
#[derive(Debug)]
pub struct Stage {
    pub name: String,
    pub from: String,
    /// (keyword in upper case, arguments) in file order.
    pub instructions: Vec<(String, String)>,
    pub args: BTreeMap<String, String>,
}

#[derive(Debug)]
pub struct Containerfile {
    pub stages: Vec<Stage>,
}

impl Containerfile {
    pub fn read() -> Self {
        let text = std::fs::read_to_string(repo().join("Containerfile")).expect("a Containerfile");
        Self::parse(&text)
    }

    pub fn parse(text: &str) -> Self {
        let mut logical = Vec::new();
        let mut current = String::new();
        for line in text.lines() {
            let trimmed = line.trim();
            if trimmed.starts_with('#') || (trimmed.is_empty() && current.is_empty()) {
                continue;
            }
            match trimmed.strip_suffix('\\') {
                Some(head) => {
                    current.push_str(head);
                    current.push(' ');
                }
                None => {
                    current.push_str(trimmed);
                    logical.push(std::mem::take(&mut current));
                }
            }
        }
        let mut global_args = BTreeMap::new();
        let mut stages: Vec<Stage> = Vec::new();
        for line in logical.iter().filter(|l| !l.trim().is_empty()) {
            let (keyword, rest) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
            let (keyword, rest) = (keyword.to_ascii_uppercase(), rest.trim().to_owned());
            match (keyword.as_str(), stages.last_mut()) {
                ("FROM", _) => {
                    let words: Vec<&str> = rest.split_whitespace().collect();
                    let name = match words.as_slice() {
                        [_, as_, name] if as_.eq_ignore_ascii_case("as") => (*name).to_owned(),
                        _ => stages.len().to_string(),
                    };
                    stages.push(Stage {
                        name,
                        from: words.first().copied().unwrap_or_default().to_owned(),
                        instructions: Vec::new(),
                        args: BTreeMap::new(),
                    });
                }
                ("ARG", stage) => {
                    let (name, default) = match rest.split_once('=') {
                        Some((n, d)) => (n.to_owned(), Some(unquote(d))),
                        None => (rest.clone(), None),
                    };
                    match stage {
                        None => {
                            global_args.insert(name, default.unwrap_or_default());
                        }
                        Some(stage) => {
                            let value = default
                                .or_else(|| global_args.get(&name).cloned())
                                .unwrap_or_default();
                            stage.args.insert(name, value);
                        }
                    }
                }
                (_, Some(stage)) => stage.instructions.push((keyword, rest)),
                (_, None) => panic!("{keyword} before the first FROM"),
            }
        }
        Self { stages }
    }

    pub fn stage(&self, name: &str) -> &Stage {
        self.stages
            .iter()
            .find(|s| s.name == name)
            .unwrap_or_else(|| panic!("no stage {name} in the Containerfile"))
    }

    /// The stage and the stages it is built `FROM`, target first, ending at an image.
    pub fn chain(&self, target: &str) -> Vec<&Stage> {
        let mut chain = vec![self.stage(target)];
        while let Some(parent) = self.stages.iter().find(|s| {
            chain
                .last()
                .is_some_and(|last| last.from == s.name && s.name != last.name)
        }) {
            chain.push(parent);
        }
        chain
    }

    /// The image a target finally rests on.
    pub fn base_image(&self, target: &str) -> String {
        self.chain(target)
            .last()
            .map(|s| s.from.clone())
            .unwrap_or_default()
    }

    /// Every instruction a target image gets, base stage first.
    pub fn instructions(&self, target: &str) -> Vec<(&Stage, &str, &str)> {
        let mut all = Vec::new();
        for stage in self.chain(target).into_iter().rev() {
            for (keyword, args) in &stage.instructions {
                all.push((stage, keyword.as_str(), args.as_str()));
            }
        }
        all
    }

    /// `LABEL`s of a target, inherited ones included, with `${ARG}`s expanded.
    pub fn labels(&self, target: &str) -> BTreeMap<String, String> {
        let mut labels = BTreeMap::new();
        for (stage, keyword, args) in self.instructions(target) {
            if keyword == "LABEL" {
                for word in words(args) {
                    let (key, value) = word.split_once('=').expect("LABEL key=value");
                    labels.insert(unquote(key), expand(&unquote(value), &stage.args));
                }
            }
        }
        labels
    }

    /// `COPY --from=<stage> <source>... <dest>` of a stage: (stage, sources, dest).
    pub fn copies_from(&self, target: &str) -> Vec<(String, Vec<String>, String)> {
        self.instructions(target)
            .into_iter()
            .filter(|(_, keyword, _)| *keyword == "COPY")
            .filter_map(|(_, _, args)| {
                let mut words = words(args);
                let from = words
                    .iter()
                    .find_map(|w| w.strip_prefix("--from="))?
                    .to_owned();
                words.retain(|w| !w.starts_with("--"));
                let dest = words.pop()?;
                Some((from, words, dest))
            })
            .collect()
    }
}

/// Splits on whitespace outside double quotes, keeping the quotes.
pub fn words(text: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut quoted = false;
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' if quoted => {
                word.push(c);
                word.extend(chars.next());
            }
            '"' => {
                quoted = !quoted;
                word.push(c);
            }
            c if c.is_whitespace() && !quoted => {
                if !word.is_empty() {
                    words.push(std::mem::take(&mut word));
                }
            }
            c => word.push(c),
        }
    }
    if !word.is_empty() {
        words.push(word);
    }
    words
}

fn unquote(text: &str) -> String {
    let text = text.trim();
    match text.strip_prefix('"').and_then(|t| t.strip_suffix('"')) {
        Some(inner) => inner.replace("\\\"", "\"").replace("\\\\", "\\"),
        None => text.to_owned(),
    }
}

fn expand(text: &str, args: &BTreeMap<String, String>) -> String {
    args.iter().fold(text.to_owned(), |text, (name, value)| {
        text.replace(&format!("${{{name}}}"), value)
            .replace(&format!("${name}"), value)
    })
}

/// What `cargo metadata` says the workspace is.
pub struct Workspace {
    pub version: String,
    pub license: String,
    /// Binary target name -> package name.
    pub binaries: BTreeMap<String, String>,
    /// Member manifests, relative to the repository root.
    pub manifests: Vec<String>,
}

pub fn workspace() -> Workspace {
    let out = std::process::Command::new(env!("CARGO"))
        .args(["metadata", "--format-version", "1", "--no-deps"])
        .current_dir(repo())
        .output()
        .expect("cargo metadata");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let metadata: Value = serde_json::from_slice(&out.stdout).expect("metadata json");
    let root = metadata["workspace_root"].as_str().expect("workspace root");
    let packages = metadata["packages"].as_array().expect("packages");
    let operator = packages
        .iter()
        .find(|p| p["name"] == "tiqzy-operator")
        .expect("the operator package");
    let mut binaries = BTreeMap::new();
    let mut manifests = Vec::new();
    for package in packages {
        let name = package["name"].as_str().expect("name").to_owned();
        for target in package["targets"].as_array().expect("targets") {
            if target["kind"]
                .as_array()
                .is_some_and(|k| k.contains(&"bin".into()))
            {
                let bin = target["name"].as_str().expect("target name").to_owned();
                binaries.insert(bin, name.clone());
            }
        }
        let manifest = package["manifest_path"].as_str().expect("manifest path");
        let relative = manifest.strip_prefix(root).expect("member under the root");
        manifests.push(relative.trim_start_matches('/').to_owned());
    }
    Workspace {
        version: operator["version"].as_str().expect("version").to_owned(),
        license: operator["license"].as_str().expect("license").to_owned(),
        binaries,
        manifests,
    }
}
