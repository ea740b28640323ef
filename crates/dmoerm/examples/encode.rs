//! The token ids a bundle scores a conversation with: the router's sequence and the experts'
//! (with their token type ids). `benches/browser` runs its peer on exactly these sequences.
//!
//!     encode MODEL '{"prompt": "...", "response": "..."}'
//!
//! Prints one JSON line: `{"router": [ids] | null, "expert": [ids], "expert_types": [ids]}`.

use dmoerm::{Conversation, ConversationInput, DeviceChoice, RewardModel};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let (Some(model), Some(input)) = (args.get(1), args.get(2)) else {
        return Err("usage: encode MODEL CONVERSATION_JSON".into());
    };
    let input: ConversationInput = serde_json::from_str(input)?;
    let conversation: Conversation = input.try_into()?;
    let encodings = RewardModel::load(model, DeviceChoice::Cpu)?.encode(&conversation)?;
    let expert = &encodings.expert;
    let types = if expert.type_ids.is_empty() { vec![0; expert.ids.len()] } else { expert.type_ids.clone() };
    let line = serde_json::json!({
        "router": encodings.router.map(|r| r.ids),
        "expert": expert.ids,
        "expert_types": types,
    });
    println!("{line}");
    Ok(())
}
