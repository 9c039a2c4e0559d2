//! The exactly-once protocol, model-checked: `model` is the protocol as a state machine,
//! `check` explores every state of it (and of deliberately broken variants, which must fail),
//! and `replay` drives the real memory store through the model's traces, so the model and the
//! code cannot drift apart unnoticed.

mod check;
mod model;
mod replay;
