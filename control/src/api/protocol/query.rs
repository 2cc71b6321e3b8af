//! The AWS Query protocol, as EC2 and Elastic Load Balancing v2 speak it:
//! form-encoded `Action=...&Version=...` requests, XML answers.
//!
//! The two differ in their details: EC2 names list members `Name.1`,
//! `Name.2` and answers lists as `<item>`s with an `<Errors>` document for
//! errors; ELBv2 names them `Name.member.1` and answers `<member>`s inside
//! an `<ErrorResponse>`. [`Params`] reads either; [`Xml`] writes both.

use crate::error::ApiError;
use std::collections::BTreeMap;

/// A request's parameters, by name (`IpPermissions.1.FromPort`...).
#[derive(Debug, Default, Clone)]
pub struct Params(BTreeMap<String, String>);

impl Params {
    /// Parses a form-encoded body (or query string).
    pub fn parse(form: &[u8]) -> Params {
        Params(
            form_urlencoded::parse(form)
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect(),
        )
    }

    /// Refuses a parameter whose name or value holds a character an XML
    /// 1.0 document cannot carry (most control characters): stored, it
    /// would make every later answer that shows it unreadable.
    pub fn check_xml_safe(&self) -> Result<(), ApiError> {
        let unsafe_char = |s: &str| {
            s.chars().find(|c| {
                matches!(*c, '\u{0}'..='\u{8}' | '\u{b}' | '\u{c}' | '\u{e}'..='\u{1f}' | '\u{fffe}' | '\u{ffff}')
            })
        };
        for (name, value) in &self.0 {
            if let Some(c) = unsafe_char(name).or_else(|| unsafe_char(value)) {
                return Err(ApiError::coded(
                    "InvalidParameterValue",
                    format!(
                        "Value for parameter {} holds the character U+{:04X}, which is not allowed",
                        name.escape_debug(),
                        u32::from(c)
                    ),
                ));
            }
        }
        Ok(())
    }

    /// A parameter, if given.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }

    /// A parameter that must be given.
    pub fn required(&self, name: &str) -> Result<&str, ApiError> {
        self.get(name).ok_or_else(|| {
            ApiError::coded(
                "MissingParameter",
                format!("The request must contain the parameter {name}"),
            )
        })
    }

    /// An integer parameter, if given.
    pub fn int(&self, name: &str) -> Result<Option<i64>, ApiError> {
        self.get(name)
            .map(|v| {
                v.parse().map_err(|_| {
                    ApiError::coded(
                        "InvalidParameterValue",
                        format!("Value ({v}) for parameter {name} is invalid: not an integer"),
                    )
                })
            })
            .transpose()
    }

    /// The numbered members under `prefix` (`prefix.1`, `prefix.2`...), in
    /// order, each as the parameters below it (`prefix.N.Rest` → `Rest`;
    /// a scalar member `prefix.N` → the empty name).
    pub fn list(&self, prefix: &str) -> Vec<Params> {
        let start = format!("{prefix}.");
        let mut members: BTreeMap<u32, Params> = BTreeMap::new();
        for (k, v) in self.0.range(start.clone()..) {
            let Some(rest) = k.strip_prefix(&start) else {
                break;
            };
            let (n, below) = match rest.split_once('.') {
                Some((n, below)) => (n, below),
                None => (rest, ""),
            };
            let Ok(n) = n.parse::<u32>() else {
                continue;
            };
            members
                .entry(n)
                .or_default()
                .0
                .insert(below.to_string(), v.clone());
        }
        members.into_values().collect()
    }

    /// The members of the structure under `prefix` (`prefix.Name` →
    /// `Name`).
    pub fn member(&self, prefix: &str) -> Params {
        let start = format!("{prefix}.");
        let mut out = Params::default();
        for (k, v) in self.0.range(start.clone()..) {
            let Some(rest) = k.strip_prefix(&start) else {
                break;
            };
            out.0.insert(rest.to_string(), v.clone());
        }
        out
    }

    /// The scalar members of a list (`prefix.1`, `prefix.2`... values).
    pub fn strings(&self, prefix: &str) -> Vec<String> {
        self.list(prefix)
            .into_iter()
            .filter_map(|p| p.get("").map(String::from))
            .collect()
    }
}

/// A small XML writer: elements, escaped text, nothing else. (The answers
/// are a few fixed shapes; a general XML library would add a dependency for
/// what `escape` and a stack do here.)
#[derive(Debug, Default)]
pub struct Xml {
    out: String,
    open: Vec<&'static str>,
}

impl Xml {
    /// A document whose root is `root` in namespace `xmlns`.
    pub fn document(root: &'static str, xmlns: &str) -> Xml {
        let mut x = Xml {
            out: String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"),
            open: Vec::new(),
        };
        x.out
            .push_str(&format!("<{root} xmlns=\"{}\">", escape(xmlns)));
        x.open.push(root);
        x
    }

    /// Opens `name`; [`close`](Self::close) ends it.
    pub fn open(&mut self, name: &'static str) -> &mut Self {
        self.out.push('<');
        self.out.push_str(name);
        self.out.push('>');
        self.open.push(name);
        self
    }

    /// Closes the innermost open element.
    pub fn close(&mut self) -> &mut Self {
        if let Some(name) = self.open.pop() {
            self.out.push_str("</");
            self.out.push_str(name);
            self.out.push('>');
        }
        self
    }

    /// `<name>text</name>`.
    pub fn text(&mut self, name: &str, text: impl std::fmt::Display) -> &mut Self {
        self.out
            .push_str(&format!("<{name}>{}</{name}>", escape(&text.to_string())));
        self
    }

    /// `<name>text</name>` if there is a text.
    pub fn text_opt(&mut self, name: &str, text: Option<impl std::fmt::Display>) -> &mut Self {
        if let Some(t) = text {
            self.text(name, t);
        }
        self
    }

    /// Closes everything and returns the document.
    pub fn finish(mut self) -> String {
        while !self.open.is_empty() {
            self.close();
        }
        self.out
    }
}

/// Escapes text for an XML element or attribute.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
}

/// Seconds since the epoch as ISO 8601 with milliseconds
/// (`2026-11-22T10:15:00.000Z`), as Query-protocol timestamps are.
pub fn iso8601(epoch: f64) -> String {
    let secs = epoch.floor() as i64;
    let millis = ((epoch - epoch.floor()) * 1000.0) as i64;
    let d = crate::api::protocol::sigv4::amz_date(secs);
    format!(
        "{}-{}-{}T{}:{}:{}.{millis:03}Z",
        &d[0..4],
        &d[4..6],
        &d[6..8],
        &d[9..11],
        &d[11..13],
        &d[13..15]
    )
}

/// How a Query service shapes its error documents.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    /// `<Response><Errors><Error>...</Error></Errors><RequestID>`.
    Ec2,
    /// `<ErrorResponse><Error><Type>Sender</Type>...</Error><RequestId>`.
    Query,
}

/// The error document for `e`.
pub fn error_document(flavor: Flavor, e: &ApiError, request_id: &str) -> String {
    let head = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n";
    match flavor {
        Flavor::Ec2 => format!(
            "{head}<Response><Errors><Error><Code>{}</Code><Message>{}</Message></Error></Errors><RequestID>{request_id}</RequestID></Response>",
            escape(e.kind),
            escape(&e.message)
        ),
        Flavor::Query => format!(
            "{head}<ErrorResponse><Error><Type>{}</Type><Code>{}</Code><Message>{}</Message></Error><RequestId>{request_id}</RequestId></ErrorResponse>",
            if e.status >= 500 {
                "Receiver"
            } else {
                "Sender"
            },
            escape(e.kind),
            escape(&e.message)
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_nest_in_both_namings() {
        let p = Params::parse(
            b"Action=X&GroupId.1=sg-a&GroupId.2=sg-b&IpPermissions.1.IpProtocol=tcp\
              &IpPermissions.1.IpRanges.1.CidrIp=127.0.0.0%2F8&IpPermissions.2.IpProtocol=udp\
              &IpPermissions.10.IpProtocol=-1&Names.member.1=a&Names.member.2=b",
        );
        assert_eq!(p.get("Action"), Some("X"));
        assert_eq!(p.strings("GroupId"), ["sg-a", "sg-b"]);
        let perms = p.list("IpPermissions");
        assert_eq!(perms.len(), 3);
        assert_eq!(perms[0].get("IpProtocol"), Some("tcp"));
        assert_eq!(
            perms[0].list("IpRanges")[0].get("CidrIp"),
            Some("127.0.0.0/8")
        );
        // Numbered, not sorted as text: 2 before 10.
        assert_eq!(perms[1].get("IpProtocol"), Some("udp"));
        assert_eq!(perms[2].get("IpProtocol"), Some("-1"));
        assert_eq!(p.strings("Names.member"), ["a", "b"]);
        assert!(p.required("Nope").is_err());
    }

    #[test]
    fn xml_escapes_and_closes() {
        let mut x = Xml::document("R", "urn:x");
        x.open("a")
            .text("b", "<&>")
            .close()
            .text_opt("c", None::<&str>);
        let doc = x.finish();
        assert!(
            doc.ends_with("<R xmlns=\"urn:x\"><a><b>&lt;&amp;&gt;</b></a></R>"),
            "{doc}"
        );
        let e = ApiError::coded("InvalidGroup.NotFound", "no <such> group");
        assert!(error_document(Flavor::Ec2, &e, "r1").contains(
            "<Code>InvalidGroup.NotFound</Code><Message>no &lt;such&gt; group</Message>"
        ));
        assert!(error_document(Flavor::Query, &e, "r1").contains("<Type>Sender</Type>"));
        assert_eq!(iso8601(1_795_349_700.25), "2026-11-22T12:15:00.250Z");
    }
}
