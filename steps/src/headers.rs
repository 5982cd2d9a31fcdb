//! A message's headers as the steps see them: names with their values, in order, a name
//! repeated for each of its values. The worker converts NATS headers to and from this form.
//!
//! Names are compared exactly (NATS header names are case-sensitive).

/// Headers: `(name, value)` pairs in order; a name with several values appears once per value.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Headers {
    entries: Vec<(String, String)>,
}

impl Headers {
    /// No headers.
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether there is no header.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The number of `(name, value)` pairs.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// The `(name, value)` pairs in order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.entries.iter().map(|(n, v)| (n.as_str(), v.as_str()))
    }

    /// The first value of `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.entries
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// Every value of `name`, in order.
    pub fn get_all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.entries
            .iter()
            .filter(move |(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// Adds a value to `name`, after its others.
    pub fn append(&mut self, name: impl Into<String>, value: impl Into<String>) {
        self.entries.push((name.into(), value.into()));
    }

    /// Makes `value` the only value of `name`: in the place of its first value, or last when
    /// `name` had none.
    pub fn insert(&mut self, name: impl Into<String>, value: impl Into<String>) {
        let name = name.into();
        match self.entries.iter().position(|(n, _)| *n == name) {
            Some(first) => {
                self.entries[first].1 = value.into();
                let mut index = 0;
                self.entries.retain(|(n, _)| {
                    index += 1;
                    index - 1 <= first || *n != name
                });
            }
            None => self.entries.push((name, value.into())),
        }
    }

    /// Removes every value of `name`.
    pub fn remove(&mut self, name: &str) {
        self.entries.retain(|(n, _)| n != name);
    }
}

impl<N: Into<String>, V: Into<String>> FromIterator<(N, V)> for Headers {
    fn from_iter<I: IntoIterator<Item = (N, V)>>(iter: I) -> Self {
        Self {
            entries: iter
                .into_iter()
                .map(|(n, v)| (n.into(), v.into()))
                .collect(),
        }
    }
}

/// Whether `name` can be a NATS header name: printable ASCII without spaces or `:`.
pub(crate) fn is_header_name(name: &str) -> bool {
    !name.is_empty() && name.chars().all(|c| c.is_ascii_graphic() && c != ':')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insert_replaces_every_value_in_the_place_of_the_first() {
        let mut h: Headers = [("A", "1"), ("M", "x"), ("B", "2"), ("M", "y")]
            .into_iter()
            .collect();
        h.insert("M", "z");
        assert_eq!(
            h.iter().collect::<Vec<_>>(),
            [("A", "1"), ("M", "z"), ("B", "2")]
        );
        h.insert("C", "3");
        assert_eq!(h.get("C"), Some("3"));
        assert_eq!(h.len(), 4);
    }

    #[test]
    fn names_are_exact() {
        let mut h: Headers = [("Trace", "t"), ("trace", "u")].into_iter().collect();
        assert_eq!(h.get_all("Trace").collect::<Vec<_>>(), ["t"]);
        h.remove("trace");
        assert_eq!(h.iter().collect::<Vec<_>>(), [("Trace", "t")]);
        h.remove("Trace");
        assert!(h.is_empty());
    }

    #[test]
    fn header_names_are_printable_ascii_without_colons() {
        assert!(is_header_name("Nats-Msg-Id"));
        for bad in ["", "Bad Name", "a:b", "é", "a\tb"] {
            assert!(!is_header_name(bad), "{bad:?}");
        }
    }
}
