//! A list answer serialized once, item by item, so that a page of it (`?limit=N` and
//! `?continue=KEY`, as Kubernetes lists page) is a slice of the shared bytes rather than a
//! build of its own. The whole list is sent as the same bytes to every request that asks
//! for all of it.
//!
//! A page's continue token is the key of its last item (a goal's name, a task's id), so
//! pages stay in step while items are added; a token whose item has left the list is
//! refused (410, as Kubernetes answers an expired token) and the client starts over.

use std::collections::HashMap;
use std::ops::Range;

use axum::body::Bytes;
use serde::Serialize;

/// A JSON array with where each item lies in it.
pub struct Listing {
    body: Bytes,
    /// Each item's key and bytes, in order.
    items: Vec<(String, Range<usize>)>,
    /// Where each key is in `items`.
    keys: HashMap<String, usize>,
}

/// One page of a [`Listing`].
#[derive(Debug)]
pub struct Page {
    /// A JSON array of the page's items.
    pub body: Bytes,
    /// The continue token of the next page, if there is one.
    pub next: Option<String>,
}

/// The continue token names an item no longer in the list.
#[derive(Debug, thiserror::Error)]
#[error("continue token {0:?} names no item of the list any more: start again without it")]
pub struct Expired(pub String);

/// A [`Listing`] being built (see [`Listing::builder`]).
pub struct Builder {
    body: Vec<u8>,
    items: Vec<(String, Range<usize>)>,
    keys: HashMap<String, usize>,
}

impl Builder {
    /// Adds `item`, serialized.
    pub fn item<T: Serialize>(&mut self, key: String, item: &T) -> Result<(), serde_json::Error> {
        let start = self.separate();
        serde_json::to_writer(&mut self.body, item)?;
        self.push(key, start);
        Ok(())
    }

    /// Adds an item that is already JSON (an item of an earlier list, unchanged).
    pub fn raw(&mut self, key: String, json: &[u8]) {
        let start = self.separate();
        self.body.extend_from_slice(json);
        self.push(key, start);
    }

    fn separate(&mut self) -> usize {
        if !self.items.is_empty() {
            self.body.push(b',');
        }
        self.body.len()
    }

    fn push(&mut self, key: String, start: usize) {
        self.keys.insert(key.clone(), self.items.len());
        self.items.push((key, start..self.body.len()));
    }

    pub fn finish(mut self) -> Listing {
        self.body.push(b']');
        // The list is kept until the next build: not with the doubling's spare half.
        self.body.shrink_to_fit();
        self.items.shrink_to_fit();
        Listing {
            body: Bytes::from(self.body),
            items: self.items,
            keys: self.keys,
        }
    }
}

impl Listing {
    /// Serializes `items` (each with its key) into one array.
    pub fn build<T: Serialize>(
        items: impl IntoIterator<Item = (String, T)>,
    ) -> Result<Listing, serde_json::Error> {
        Self::build_like(items, None)
    }

    /// Like [`Listing::build`], sized as `last` (the list it replaces).
    pub fn build_like<T: Serialize>(
        items: impl IntoIterator<Item = (String, T)>,
        last: Option<&Listing>,
    ) -> Result<Listing, serde_json::Error> {
        let mut builder = Listing::builder(last);
        for (key, item) in items {
            builder.item(key, &item)?;
        }
        Ok(builder.finish())
    }

    /// A list built item by item, sized as `last` (the list it replaces): a list of
    /// megabytes rebuilt several times a second, grown by doubling, would pass through
    /// twice its size at every build.
    pub fn builder(last: Option<&Listing>) -> Builder {
        let (bytes, count) = last.map_or((64 * 1024, 0), |l| (l.body.len(), l.items.len()));
        let mut body = Vec::with_capacity(bytes + bytes / 16);
        body.push(b'[');
        Builder {
            body,
            items: Vec::with_capacity(count),
            keys: HashMap::with_capacity(count),
        }
    }

    /// The bytes of the item keyed `key`.
    pub fn item(&self, key: &str) -> Option<&[u8]> {
        let (_, range) = self.items.get(*self.keys.get(key)?)?;
        self.body.get(range.clone())
    }

    /// Up to `limit` items after the one keyed `after` (from the start without it); all of
    /// them without a limit.
    pub fn page(&self, after: Option<&str>, limit: Option<usize>) -> Result<Page, Expired> {
        let start = match after {
            Some(key) => match self.keys.get(key) {
                Some(index) => index + 1,
                None => return Err(Expired(key.to_string())),
            },
            None => 0,
        };
        let end = limit.map_or(self.items.len(), |n| {
            start.saturating_add(n.max(1)).min(self.items.len())
        });
        let next = match end.checked_sub(1).and_then(|i| self.items.get(i)) {
            Some((key, _)) if end < self.items.len() => Some(key.clone()),
            _ => None,
        };
        if start == 0 && end == self.items.len() {
            return Ok(Page {
                body: self.body.clone(),
                next,
            });
        }
        let first = self.items.get(start).map(|(_, r)| r);
        let last = end
            .checked_sub(1)
            .and_then(|i| self.items.get(i))
            .map(|(_, r)| r);
        let body = match (first, last) {
            (Some(first), Some(last)) if start < end => {
                let mut page = Vec::with_capacity(last.end - first.start + 2);
                page.push(b'[');
                page.extend_from_slice(&self.body[first.start..last.end]);
                page.push(b']');
                Bytes::from(page)
            }
            _ => Bytes::from_static(b"[]"),
        };
        Ok(Page { body, next })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listing(n: usize) -> Listing {
        Listing::build((0..n).map(|i| {
            (
                format!("g{i}"),
                serde_json::json!({ "name": format!("g{i}") }),
            )
        }))
        .unwrap()
    }

    fn names(page: &Page) -> Vec<String> {
        let items: Vec<serde_json::Value> = serde_json::from_slice(&page.body).unwrap();
        items
            .iter()
            .map(|i| i["name"].as_str().unwrap().to_string())
            .collect()
    }

    #[test]
    fn pages_walk_the_whole_list_once_in_order() {
        let listing = listing(10);
        let mut seen = Vec::new();
        let mut after = None;
        loop {
            let page = listing.page(after.as_deref(), Some(3)).unwrap();
            seen.extend(names(&page));
            match page.next {
                Some(next) => after = Some(next),
                None => break,
            }
        }
        let all: Vec<String> = (0..10).map(|i| format!("g{i}")).collect();
        assert_eq!(seen, all);
        // Without a limit: the whole list, the same bytes.
        let whole = listing.page(None, None).unwrap();
        assert_eq!(names(&whole), all);
        assert!(whole.next.is_none());
        assert_eq!(whole.body.as_ptr(), listing.body.as_ptr());
    }

    #[test]
    fn edges_of_a_list() {
        let listing = listing(3);
        // A limit that ends exactly at the end has no next page.
        let page = listing.page(None, Some(3)).unwrap();
        assert_eq!(names(&page).len(), 3);
        assert!(page.next.is_none());
        // After the last item: an empty page.
        let page = listing.page(Some("g2"), Some(5)).unwrap();
        assert_eq!(&page.body[..], b"[]");
        assert!(page.next.is_none());
        // A limit of 0 is read as 1 (a page is never empty while items remain).
        let page = listing.page(None, Some(0)).unwrap();
        assert_eq!(names(&page), ["g0"]);
        assert_eq!(page.next.as_deref(), Some("g0"));
        // An empty list.
        let empty = Listing::build(Vec::<(String, u8)>::new()).unwrap();
        let page = empty.page(None, Some(10)).unwrap();
        assert_eq!(&page.body[..], b"[]");
        // A token whose item left.
        assert!(listing.page(Some("gone"), Some(1)).is_err());
    }
}
