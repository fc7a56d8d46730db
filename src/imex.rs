//! The implicit solve (lands with the native branch).
