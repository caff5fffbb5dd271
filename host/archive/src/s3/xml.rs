//! A tiny, strict reader for the small XML documents S3 answers with (errors, listings,
//! the Object Lock configuration): a tree of elements and their text.
//!
//! It accepts what those documents use (a declaration, comments, attributes, CDATA, the
//! five predefined entities and numeric character references) and refuses everything
//! else: a DOCTYPE (so no entity definitions), an unknown entity, a mismatched or missing
//! end tag, text outside the root, and a document that stops early. Namespace prefixes
//! are kept as part of the name; S3 uses a default namespace only.

/// One element: its name, the text directly inside it and its child elements.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct Element {
    pub(crate) name: String,
    pub(crate) text: String,
    pub(crate) children: Vec<Element>,
}

/// Why a document was refused, with the byte offset where reading stopped.
#[derive(Debug, PartialEq)]
pub(crate) struct XmlError {
    pub(crate) offset: usize,
    pub(crate) problem: &'static str,
}

impl std::fmt::Display for XmlError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "malformed XML at byte {}: {}", self.offset, self.problem)
    }
}

/// Deeper nesting than S3 ever sends is refused rather than followed.
const MAX_DEPTH: usize = 32;

impl Element {
    /// The first child named `name`.
    pub(crate) fn child(&self, name: &str) -> Option<&Element> {
        self.children.iter().find(|c| c.name == name)
    }

    /// Every child named `name`, in document order.
    #[cfg(test)]
    pub(crate) fn children<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Element> {
        self.children.iter().filter(move |c| c.name == name)
    }

    /// The text of the first child named `name`.
    pub(crate) fn child_text(&self, name: &str) -> Option<&str> {
        self.child(name).map(|c| c.text.as_str())
    }
}

/// Parse a whole document into its root element.
pub(crate) fn parse(doc: &str) -> Result<Element, XmlError> {
    let bytes = doc.as_bytes();
    let mut pos = doc.strip_prefix('\u{feff}').map_or(0, |_| 3);
    let err = |offset, problem| Err(XmlError { offset, problem });
    // Open elements, innermost last; the root once it is closed.
    let mut open: Vec<Element> = Vec::new();
    let mut root: Option<Element> = None;
    while pos < bytes.len() {
        if bytes[pos] != b'<' {
            // Text up to the next tag.
            let end = doc[pos..].find('<').map_or(bytes.len(), |i| pos + i);
            let raw = &doc[pos..end];
            match open.last_mut() {
                Some(element) => element.text.push_str(&decode(raw, pos)?),
                None if raw.trim().is_empty() => {}
                None => return err(pos, "text outside the root element"),
            }
            pos = end;
            continue;
        }
        let rest = &doc[pos..];
        if rest.starts_with("<?") {
            pos = skip_past(doc, pos, "?>", "an unterminated processing instruction")?;
        } else if rest.starts_with("<!--") {
            pos = skip_past(doc, pos, "-->", "an unterminated comment")?;
        } else if rest.starts_with("<![CDATA[") {
            let start = pos + "<![CDATA[".len();
            let end = skip_past(doc, pos, "]]>", "an unterminated CDATA section")?;
            match open.last_mut() {
                Some(element) => element.text.push_str(&doc[start..end - 3]),
                None => return err(pos, "CDATA outside the root element"),
            }
            pos = end;
        } else if rest.starts_with("<!") {
            return err(pos, "a DOCTYPE or other declaration (refused)");
        } else if rest.starts_with("</") {
            let end = skip_past(doc, pos, ">", "an unterminated end tag")?;
            let name = doc[pos + 2..end - 1].trim_end();
            let Some(element) = open.pop() else {
                return err(pos, "an end tag without a start tag");
            };
            if element.name != name {
                return err(pos, "an end tag that does not match its start tag");
            }
            match open.last_mut() {
                Some(parent) => parent.children.push(element),
                None => root = Some(element),
            }
            pos = end;
        } else {
            if root.is_some() && open.is_empty() {
                return err(pos, "a second root element");
            }
            let (name, end, self_closing) = start_tag(doc, pos)?;
            let element = Element {
                name: name.to_string(),
                ..Element::default()
            };
            if self_closing {
                match open.last_mut() {
                    Some(parent) => parent.children.push(element),
                    None => root = Some(element),
                }
            } else {
                if open.len() == MAX_DEPTH {
                    return err(pos, "elements nested too deeply");
                }
                open.push(element);
            }
            pos = end;
        }
    }
    if !open.is_empty() {
        return err(
            bytes.len(),
            "the document ends inside an element (truncated?)",
        );
    }
    root.ok_or(XmlError {
        offset: bytes.len(),
        problem: "no root element",
    })
}

/// The offset just past the first `end` at or after `pos`.
fn skip_past(doc: &str, pos: usize, end: &str, problem: &'static str) -> Result<usize, XmlError> {
    doc[pos..]
        .find(end)
        .map(|i| pos + i + end.len())
        .ok_or(XmlError {
            offset: pos,
            problem,
        })
}

/// A start tag at `pos`: its name, the offset past it, and whether it is `<name/>`.
/// Attributes are checked for form and skipped.
fn start_tag(doc: &str, pos: usize) -> Result<(&str, usize, bool), XmlError> {
    let bytes = doc.as_bytes();
    let err = |offset, problem| Err(XmlError { offset, problem });
    let name_start = pos + 1;
    let mut i = name_start;
    while i < bytes.len() && !matches!(bytes[i], b' ' | b'\t' | b'\r' | b'\n' | b'/' | b'>') {
        if matches!(bytes[i], b'<' | b'&' | b'"' | b'\'' | b'=') {
            return err(i, "a character not allowed in an element name");
        }
        i += 1;
    }
    let name = &doc[name_start..i];
    if name.is_empty() {
        return err(pos, "an element without a name");
    }
    loop {
        while i < bytes.len() && bytes[i].is_ascii_whitespace() {
            i += 1;
        }
        match bytes.get(i) {
            None => return err(pos, "an unterminated start tag (truncated?)"),
            Some(b'>') => return Ok((name, i + 1, false)),
            Some(b'/') if bytes.get(i + 1) == Some(&b'>') => return Ok((name, i + 2, true)),
            Some(_) => {
                // name="value" or name='value'
                let attr = i;
                while i < bytes.len() && !matches!(bytes[i], b'=' | b'>' | b'/' | b'<') {
                    if bytes[i].is_ascii_whitespace() {
                        break;
                    }
                    i += 1;
                }
                while i < bytes.len() && bytes[i].is_ascii_whitespace() {
                    i += 1;
                }
                if i == attr || bytes.get(i) != Some(&b'=') {
                    return err(attr, "a malformed attribute");
                }
                i += 1;
                while i < bytes.len() && bytes[i].is_ascii_whitespace() {
                    i += 1;
                }
                let quote = match bytes.get(i) {
                    Some(q @ (b'"' | b'\'')) => *q,
                    _ => return err(attr, "an attribute value without quotes"),
                };
                let Some(len) = doc[i + 1..].find(quote as char) else {
                    return err(attr, "an unterminated attribute value (truncated?)");
                };
                let value = &doc[i + 1..i + 1 + len];
                if value.contains('<') {
                    return err(attr, "'<' in an attribute value");
                }
                decode(value, i + 1)?;
                i += len + 2;
            }
        }
    }
}

/// `raw` with its entity and character references replaced.
fn decode(raw: &str, offset: usize) -> Result<std::borrow::Cow<'_, str>, XmlError> {
    if !raw.contains('&') {
        return Ok(raw.into());
    }
    let mut out = String::with_capacity(raw.len());
    let mut rest = raw;
    while let Some(amp) = rest.find('&') {
        out.push_str(&rest[..amp]);
        let at = offset + (raw.len() - rest.len()) + amp;
        let after = &rest[amp + 1..];
        let Some(semi) = after.find(';').filter(|&s| s <= 10) else {
            return Err(XmlError {
                offset: at,
                problem: "an '&' that does not start a reference",
            });
        };
        let reference = &after[..semi];
        let c = match reference {
            "lt" => '<',
            "gt" => '>',
            "amp" => '&',
            "quot" => '"',
            "apos" => '\'',
            _ => {
                let number = if let Some(hex) = reference
                    .strip_prefix("#x")
                    .or_else(|| reference.strip_prefix("#X"))
                {
                    u32::from_str_radix(hex, 16)
                        .ok()
                        .filter(|_| !hex.starts_with('+'))
                } else if let Some(dec) = reference.strip_prefix('#') {
                    dec.parse::<u32>().ok().filter(|_| !dec.starts_with('+'))
                } else {
                    return Err(XmlError {
                        offset: at,
                        problem: "an unknown entity (only lt, gt, amp, quot, apos)",
                    });
                };
                match number.filter(|&n| n != 0).and_then(char::from_u32) {
                    Some(c) => c,
                    None => {
                        return Err(XmlError {
                            offset: at,
                            problem: "a character reference to no valid character",
                        });
                    }
                }
            }
        };
        out.push(c);
        rest = &after[semi + 1..];
    }
    out.push_str(rest);
    Ok(out.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    const LISTING: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">
  <Name>bucket</Name>
  <!-- a comment -->
  <IsTruncated>true</IsTruncated>
  <Contents><Key>a&amp;b &lt;c&gt; &quot;d&quot; &apos;e&apos;</Key><Size>12</Size></Contents>
  <Contents><Key>&#233;&#x20AC;&#X1F600;</Key><Size>0</Size><Owner/></Contents>
  <NextContinuationToken><![CDATA[1<&>2]]></NextContinuationToken>
</ListBucketResult>
"#;

    #[test]
    fn a_listing_is_read_with_its_entities_decoded() {
        let root = parse(LISTING).unwrap();
        assert_eq!(root.name, "ListBucketResult");
        assert_eq!(root.child_text("Name"), Some("bucket"));
        assert_eq!(root.child_text("IsTruncated"), Some("true"));
        let contents: Vec<_> = root.children("Contents").collect();
        assert_eq!(contents.len(), 2);
        assert_eq!(contents[0].child_text("Key"), Some("a&b <c> \"d\" 'e'"));
        assert_eq!(contents[0].child_text("Size"), Some("12"));
        assert_eq!(contents[1].child_text("Key"), Some("é€😀"));
        assert_eq!(
            contents[1].child("Owner").map(|o| o.text.as_str()),
            Some("")
        );
        assert_eq!(root.child_text("NextContinuationToken"), Some("1<&>2"));
    }

    #[test]
    fn a_missing_element_is_none() {
        let root = parse("<Error><Code>NoSuchKey</Code></Error>").unwrap();
        assert_eq!(root.child_text("Code"), Some("NoSuchKey"));
        assert_eq!(root.child_text("Message"), None);
        assert_eq!(root.children("Contents").count(), 0);
        // Only direct children count.
        let root = parse("<A><B><C>x</C></B></A>").unwrap();
        assert_eq!(root.child_text("C"), None);
    }

    #[test]
    fn a_truncated_document_is_refused() {
        for cut in 1..LISTING.trim_end().len() - 1 {
            if !LISTING.is_char_boundary(cut) {
                continue;
            }
            assert!(
                parse(&LISTING[..cut]).is_err(),
                "accepted {:?}",
                &LISTING[..cut]
            );
        }
        assert!(parse(LISTING.trim_end()).is_ok());
        assert_eq!(
            parse("<Error><Code>x</Code>").unwrap_err().problem,
            "the document ends inside an element (truncated?)"
        );
        assert_eq!(parse("").unwrap_err().problem, "no root element");
    }

    #[test]
    fn malformed_documents_are_refused() {
        for (doc, problem) in [
            (
                "<A>&foo;</A>",
                "an unknown entity (only lt, gt, amp, quot, apos)",
            ),
            ("<A>a & b</A>", "an '&' that does not start a reference"),
            ("<A>&#0;</A>", "a character reference to no valid character"),
            (
                "<A>&#xD800;</A>",
                "a character reference to no valid character",
            ),
            (
                "<A>&#x110000;</A>",
                "a character reference to no valid character",
            ),
            (
                "<A>&#-1;</A>",
                "a character reference to no valid character",
            ),
            ("<A>&#x;</A>", "a character reference to no valid character"),
            ("<A></B>", "an end tag that does not match its start tag"),
            ("<A/><B/>", "a second root element"),
            ("x<A/>", "text outside the root element"),
            ("<A/>x", "text outside the root element"),
            ("</A>", "an end tag without a start tag"),
            (
                "<!DOCTYPE a [<!ENTITY x \"y\">]><A>&x;</A>",
                "a DOCTYPE or other declaration (refused)",
            ),
            ("<A b=c/>", "an attribute value without quotes"),
            ("<A b=\"c/>", "an unterminated attribute value (truncated?)"),
            ("<A =\"c\"/>", "a malformed attribute"),
            (
                "<A b=\"&nope;\"/>",
                "an unknown entity (only lt, gt, amp, quot, apos)",
            ),
            ("<>", "an element without a name"),
            ("<A<B/>", "a character not allowed in an element name"),
        ] {
            assert_eq!(parse(doc).map_err(|e| e.problem), Err(problem), "{doc}");
        }
        let deep = "<a>".repeat(MAX_DEPTH + 1) + &"</a>".repeat(MAX_DEPTH + 1);
        assert_eq!(
            parse(&deep).unwrap_err().problem,
            "elements nested too deeply"
        );
        let fine = "<a>".repeat(MAX_DEPTH) + &"</a>".repeat(MAX_DEPTH);
        assert!(parse(&fine).is_ok());
    }

    #[test]
    fn attributes_and_whitespace_in_tags_are_accepted() {
        let root = parse("\u{feff}<A x = 'y>' z=\"&amp;\" ><B\n/></A >").unwrap();
        assert_eq!(root.name, "A");
        assert_eq!(root.children.len(), 1);
        assert_eq!(root.children[0].name, "B");
    }
}
