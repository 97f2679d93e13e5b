//! PLACEHOLDER (issue 3): replace this file.
