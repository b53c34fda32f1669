//! `Computer`: the agent sees and drives the display of its computer, in the shape of
//! Anthropic's computer-use tool (`computer_20250124`, with `zoom` from its later version):
//! `{action, coordinate, text, scroll_direction, scroll_amount, duration, region,
//! start_coordinate}`, coordinates in pixels of the screenshots it was sent. Every action
//! answers with a screenshot, as the reference implementation does, so the model sees what
//! its action did. It is offered only on a computer with a display (capability `gui` and a
//! `display`), and reaches that display only through [`crate::computer::Computer`].

use std::time::Duration;

use async_trait::async_trait;
use serde_json::{Value, json};

use super::{Input as Fields, Tool, ToolContext, ToolError, ToolOutput};
use crate::computer::desktop::{Button, Input, Point, Region, Screenshot, ScrollDirection};
use crate::model::Image;

/// The tool's name, as agents are granted it.
pub const COMPUTER_TOOL: &str = "Computer";
/// The longest `wait` (and `duration`) one call may ask for.
const MAX_WAIT: Duration = Duration::from_secs(30);
/// How long the screen is given to show an action's effect before the screenshot after it
/// (a window redraws, an application answers a key).
const SETTLE: Duration = Duration::from_millis(300);
/// The most wheel clicks one scroll may ask for.
const MAX_SCROLL: u64 = 50;

/// One action the model asked for.
#[derive(Clone, Debug, PartialEq)]
enum Action {
    Screenshot,
    Zoom(Region),
    Wait(Duration),
    Do(Input),
}

pub struct ComputerUse;

const FIELDS: [&str; 8] = [
    "action",
    "coordinate",
    "text",
    "scroll_direction",
    "scroll_amount",
    "duration",
    "region",
    "start_coordinate",
];

fn point(fields: &Fields<'_>, field: &str) -> Result<Option<Point>, ToolError> {
    let Some(value) = fields.get(field) else {
        return Ok(None);
    };
    match value.as_array().map(|a| a.as_slice()) {
        Some([x, y]) => match (x.as_u64(), y.as_u64()) {
            (Some(x), Some(y)) => Ok(Some(Point {
                x: u32::try_from(x).unwrap_or(u32::MAX),
                y: u32::try_from(y).unwrap_or(u32::MAX),
            })),
            _ => Err(ToolError::invalid(
                field,
                "must be [x, y], non-negative integers",
            )),
        },
        _ => Err(ToolError::invalid(field, "must be [x, y]")),
    }
}

fn required_point(fields: &Fields<'_>, field: &str, action: &str) -> Result<Point, ToolError> {
    point(fields, field)?.ok_or_else(|| ToolError::invalid(field, format!("required by {action}")))
}

fn parse(input: &Value) -> Result<Action, ToolError> {
    let fields = Fields::new(input, &FIELDS)?;
    let action = fields.str("action")?;
    let text = |why: &str| -> Result<String, ToolError> {
        match fields.opt_str("text")? {
            Some(t) if !t.is_empty() => Ok(t.to_string()),
            _ => Err(ToolError::invalid("text", format!("required by {why}"))),
        }
    };
    let click = |button, count| -> Result<Action, ToolError> {
        Ok(Action::Do(Input::Click {
            at: point(&fields, "coordinate")?,
            button,
            count,
        }))
    };
    Ok(match action {
        "screenshot" => Action::Screenshot,
        "left_click" => click(Button::Left, 1)?,
        "double_click" => click(Button::Left, 2)?,
        "triple_click" => click(Button::Left, 3)?,
        "right_click" => click(Button::Right, 1)?,
        "middle_click" => click(Button::Middle, 1)?,
        "mouse_move" => Action::Do(Input::Move(required_point(&fields, "coordinate", action)?)),
        "left_click_drag" => Action::Do(Input::Drag {
            from: required_point(&fields, "start_coordinate", action)?,
            to: required_point(&fields, "coordinate", action)?,
        }),
        "scroll" => {
            let direction = match fields.str("scroll_direction")? {
                "up" => ScrollDirection::Up,
                "down" => ScrollDirection::Down,
                "left" => ScrollDirection::Left,
                "right" => ScrollDirection::Right,
                other => {
                    return Err(ToolError::invalid(
                        "scroll_direction",
                        format!("{other:?}: expected up, down, left or right"),
                    ));
                }
            };
            let amount = fields.opt_u64("scroll_amount")?.unwrap_or(3);
            if amount == 0 || amount > MAX_SCROLL {
                return Err(ToolError::invalid(
                    "scroll_amount",
                    format!("must be 1 to {MAX_SCROLL}"),
                ));
            }
            Action::Do(Input::Scroll {
                at: point(&fields, "coordinate")?,
                direction,
                amount: amount as u32,
            })
        }
        "type" => Action::Do(Input::Type(text(action)?)),
        "key" => Action::Do(Input::Key(text(action)?)),
        "wait" => {
            let seconds = match fields.get("duration") {
                None => 1.0,
                Some(v) => v.as_f64().filter(|s| *s >= 0.0).ok_or_else(|| {
                    ToolError::invalid("duration", "must be a non-negative number of seconds")
                })?,
            };
            let wait = Duration::from_secs_f64(seconds.min(MAX_WAIT.as_secs_f64()));
            Action::Wait(wait)
        }
        "zoom" => {
            let region = fields
                .get("region")
                .and_then(Value::as_array)
                .map(|r| r.iter().map(Value::as_u64).collect::<Option<Vec<_>>>());
            match region {
                Some(Some(r)) if r.len() == 4 => {
                    let at = |i: usize| u32::try_from(r[i]).unwrap_or(u32::MAX);
                    Action::Zoom(Region {
                        x0: at(0),
                        y0: at(1),
                        x1: at(2),
                        y1: at(3),
                    })
                }
                _ => {
                    return Err(ToolError::invalid(
                        "region",
                        "zoom needs [x0, y0, x1, y1], non-negative integers",
                    ));
                }
            }
        }
        other => {
            return Err(ToolError::invalid(
                "action",
                format!(
                    "{other:?}: expected screenshot, left_click, double_click, triple_click, right_click, \
                     middle_click, mouse_move, left_click_drag, scroll, type, key, wait or zoom"
                ),
            ));
        }
    })
}

/// The screenshot as the model is sent it: the image, and a line saying what it shows.
fn answer(what: &str, shot: Screenshot) -> ToolOutput {
    let text = format!(
        "{what}; screenshot {}x{} (the screen is {}x{}; coordinates are in screenshot pixels)",
        shot.size.width, shot.size.height, shot.screen.width, shot.screen.height
    );
    ToolOutput {
        images: vec![Image::png(&shot.png)],
        ..ToolOutput::ok(text)
    }
}

#[async_trait]
impl Tool for ComputerUse {
    fn name(&self) -> &str {
        COMPUTER_TOOL
    }

    fn description(&self) -> &str {
        "Sees and drives the computer's screen with mouse and keyboard. Every action answers with a \
         screenshot. Coordinates are [x, y] in pixels of the screenshots you are sent. Actions: \
         screenshot; left_click, double_click, triple_click, right_click, middle_click (at `coordinate`, \
         or where the pointer is); mouse_move (`coordinate`); left_click_drag (`start_coordinate` to \
         `coordinate`); scroll (`scroll_direction` up/down/left/right, `scroll_amount` wheel clicks, \
         at `coordinate`); type (`text`; a newline presses Return); key (`text`, xdotool names such as \
         Return, ctrl+c, shift+Tab); wait (`duration` seconds); zoom (`region` [x0, y0, x1, y1] seen \
         at full resolution). Click into a window before typing into it."
    }

    fn input_schema(&self) -> Value {
        let pair = json!({"type": "array", "items": {"type": "integer", "minimum": 0}, "minItems": 2, "maxItems": 2});
        json!({
            "type": "object",
            "properties": {
                "action": {"type": "string", "enum": [
                    "screenshot", "left_click", "double_click", "triple_click", "right_click",
                    "middle_click", "mouse_move", "left_click_drag", "scroll", "type", "key",
                    "wait", "zoom"
                ]},
                "coordinate": pair,
                "start_coordinate": pair,
                "text": {"type": "string"},
                "scroll_direction": {"type": "string", "enum": ["up", "down", "left", "right"]},
                "scroll_amount": {"type": "integer", "minimum": 1, "maximum": MAX_SCROLL},
                "duration": {"type": "number", "minimum": 0, "maximum": MAX_WAIT.as_secs()},
                "region": {"type": "array", "items": {"type": "integer", "minimum": 0}, "minItems": 4, "maxItems": 4}
            },
            "required": ["action"],
            "additionalProperties": false
        })
    }

    async fn run(&self, input: &Value, ctx: &ToolContext<'_>) -> Result<ToolOutput, ToolError> {
        let action = parse(input)?;
        let computer = ctx.computer;
        let pause = |wait: Duration| async move {
            tokio::select! {
                _ = tokio::time::sleep(wait) => Ok(()),
                _ = ctx.cancel.cancelled() => Err(ToolError::Halt(super::Halt::Cancelled)),
            }
        };
        match action {
            Action::Screenshot => Ok(answer("the screen", computer.screenshot(None).await?)),
            Action::Zoom(region) => Ok(answer(
                &format!(
                    "the region [{}, {}, {}, {}] at full resolution",
                    region.x0, region.y0, region.x1, region.y1
                ),
                computer.screenshot(Some(region)).await?,
            )),
            Action::Wait(wait) => {
                pause(wait).await?;
                Ok(answer(
                    &format!("waited {:.1}s", wait.as_secs_f64()),
                    computer.screenshot(None).await?,
                ))
            }
            Action::Do(input) => {
                let done = done(&input);
                computer.input(input).await?;
                pause(SETTLE).await?;
                Ok(answer(&done, computer.screenshot(None).await?))
            }
        }
    }
}

/// What an input did, in a few words for the model.
fn done(input: &Input) -> String {
    match input {
        Input::Move(p) => format!("moved the pointer to [{}, {}]", p.x, p.y),
        Input::Click { at, button, count } => {
            let times = match count {
                1 => String::new(),
                2 => " twice".into(),
                n => format!(" {n} times"),
            };
            let at = at.map_or(String::new(), |p| format!(" at [{}, {}]", p.x, p.y));
            format!("clicked {button:?}{times}{at}").to_lowercase()
        }
        Input::Drag { from, to } => format!(
            "dragged from [{}, {}] to [{}, {}]",
            from.x, from.y, to.x, to.y
        ),
        Input::Scroll {
            direction, amount, ..
        } => format!("scrolled {direction:?} {amount}").to_lowercase(),
        Input::Type(text) => format!("typed {} characters", text.chars().count()),
        Input::Key(combo) => format!("pressed {combo}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actions_read_in_the_computer_use_shape() {
        assert_eq!(
            parse(&json!({"action": "screenshot"})).unwrap(),
            Action::Screenshot
        );
        assert_eq!(
            parse(&json!({"action": "double_click", "coordinate": [10, 20]})).unwrap(),
            Action::Do(Input::Click {
                at: Some(Point { x: 10, y: 20 }),
                button: Button::Left,
                count: 2
            })
        );
        assert_eq!(
            parse(&json!({"action": "left_click_drag", "start_coordinate": [1, 2], "coordinate": [3, 4]}))
                .unwrap(),
            Action::Do(Input::Drag {
                from: Point { x: 1, y: 2 },
                to: Point { x: 3, y: 4 }
            })
        );
        assert_eq!(
            parse(&json!({"action": "scroll", "scroll_direction": "down", "scroll_amount": 5}))
                .unwrap(),
            Action::Do(Input::Scroll {
                at: None,
                direction: ScrollDirection::Down,
                amount: 5
            })
        );
        assert_eq!(
            parse(&json!({"action": "key", "text": "ctrl+c"})).unwrap(),
            Action::Do(Input::Key("ctrl+c".into()))
        );
        assert_eq!(
            parse(&json!({"action": "wait", "duration": 0.5})).unwrap(),
            Action::Wait(Duration::from_millis(500))
        );
        assert_eq!(
            parse(&json!({"action": "zoom", "region": [0, 0, 100, 50]})).unwrap(),
            Action::Zoom(Region {
                x0: 0,
                y0: 0,
                x1: 100,
                y1: 50
            })
        );
    }

    #[test]
    fn malformed_actions_name_the_field() {
        let field = |input: Value| match parse(&input) {
            Err(ToolError::InvalidInput { field, .. }) => field,
            other => panic!("{other:?}"),
        };
        assert_eq!(field(json!({"action": "fly"})), "action");
        assert_eq!(field(json!({"action": "mouse_move"})), "coordinate");
        assert_eq!(
            field(json!({"action": "left_click", "coordinate": [1]})),
            "coordinate"
        );
        assert_eq!(field(json!({"action": "type"})), "text");
        assert_eq!(
            field(json!({"action": "scroll", "scroll_direction": "sideways"})),
            "scroll_direction"
        );
        assert_eq!(field(json!({"action": "zoom", "region": [1, 2]})), "region");
        assert_eq!(
            field(json!({"action": "screenshot", "colour": true})),
            "colour"
        );
    }
}
