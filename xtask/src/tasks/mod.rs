//! Developer tasks: the test command, the image, the Compose stack, the nginx stand-in.

pub(crate) mod compose;
pub(crate) mod docker;
pub(crate) mod image;
pub(crate) mod standin;
pub(crate) mod test;
