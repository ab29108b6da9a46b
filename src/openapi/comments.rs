//! Proto comments, from the source info a descriptor set carries (protox
//! keeps it when it compiles `.proto` files; `protoc` does with
//! `--include_source_info`; reflection serves what the backend was built with).

use prost_reflect::FileDescriptor;
use std::collections::HashMap;

/// Comments by file and descriptor path, read once per file.
#[derive(Default)]
pub struct Comments {
    files: HashMap<String, HashMap<Vec<i32>, String>>,
}

impl Comments {
    /// The comment on the element at `path` of `file` (a message, field,
    /// enum, value, service or method), leading and trailing joined.
    pub fn get(&mut self, file: &FileDescriptor, path: &[i32]) -> Option<&str> {
        self.files
            .entry(file.name().to_owned())
            .or_insert_with(|| index(file))
            .get(path)
            .map(String::as_str)
    }
}

fn index(file: &FileDescriptor) -> HashMap<Vec<i32>, String> {
    let mut out = HashMap::new();
    let Some(info) = &file.file_descriptor_proto().source_code_info else {
        return out;
    };
    for location in &info.location {
        let parts: Vec<String> = [&location.leading_comments, &location.trailing_comments]
            .into_iter()
            .flatten()
            .map(|c| clean(c))
            .filter(|c| !c.is_empty())
            .collect();
        if !parts.is_empty() {
            out.insert(location.path.clone(), parts.join("\n\n"));
        }
    }
    out
}

/// Drops the one space after `//` and the blank lines around the text.
fn clean(comment: &str) -> String {
    let lines: Vec<&str> = comment
        .lines()
        .map(|l| l.strip_prefix(' ').unwrap_or(l).trim_end())
        .collect();
    lines.join("\n").trim().to_owned()
}

/// The first sentence or line of a comment: an operation's summary.
pub fn summary(comment: &str) -> String {
    let first = comment.split("\n\n").next().unwrap_or(comment);
    let line = first.replace('\n', " ");
    match line.find(". ") {
        Some(i) => line[..=i].to_owned(),
        None => line,
    }
}
