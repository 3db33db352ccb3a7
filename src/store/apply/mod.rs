//! The apply side of a region: committed entries turned into KV writes. Built so far: the
//! evaluation of write commands (`eval`); the apply FSM that batches many regions' entries
//! into one KV write comes next.

pub mod eval;
