//! The wire spelling of every word, pinned: stored records, API answers and bus messages
//! already use these, so a change here is a breaking change of the format.

mod wire;
