//! The records these tests write, made one way: a weekly cron task, a request between two
//! agents, a claimer holding a fresh lease.

use std::time::Duration;

use orbit_store::{
    AgentName, Claimer, InstanceId, MessageType, NewMessage, NewTask, ScheduleType, SessionId,
    timestamp,
};

/// A task that fires every Monday at 09:00, so never during a test.
pub fn weekly_task(prompt: impl Into<String>) -> NewTask {
    NewTask {
        node: None,
        name: None,
        prompt: prompt.into(),
        schedule_type: ScheduleType::Cron,
        schedule_value: "0 9 * * 1".into(),
        context_mode: Default::default(),
        timezone: None,
        next_run: None,
        worktree: false,
        branch: None,
    }
}

/// A request from `from` to `to`.
pub fn request(from: &AgentName, to: &AgentName, text: impl Into<String>) -> NewMessage {
    NewMessage {
        from_agent: from.clone().into(),
        to_agent: to.clone(),
        message: text.into(),
        message_type: MessageType::Request,
        request_id: None,
    }
}

/// A claimer of a fresh session and instance, its lease a minute long.
pub fn claimer() -> Claimer {
    Claimer {
        session: SessionId::new(),
        instance: InstanceId::new(),
        until: timestamp::now() + Duration::from_secs(60),
    }
}
