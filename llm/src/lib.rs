//! The LLM brain: any OpenAI-compatible Chat Completions server as a call's brain (issue 11).
