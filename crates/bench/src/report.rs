//! What a scenario reports: figures in sections, printed as a table or as one JSON object.

use serde_json::{Map, Value, json};

#[derive(Debug, Clone)]
pub struct Figure {
    pub key: String,
    pub value: Value,
    pub unit: &'static str,
    /// The target for this figure, when it has one.
    pub target: Option<String>,
}

/// A group of figures: the whole run, or one size of a multi-size scenario.
#[derive(Debug, Clone, Default)]
pub struct Section {
    pub label: String,
    pub figures: Vec<Figure>,
}

impl Section {
    pub fn new(label: impl Into<String>) -> Self {
        Self {
            label: label.into(),
            figures: Vec::new(),
        }
    }

    pub fn add(&mut self, key: &str, value: impl Into<Value>, unit: &'static str) -> &mut Self {
        self.figures.push(Figure {
            key: key.to_owned(),
            value: value.into(),
            unit,
            target: None,
        });
        self
    }

    /// A number rounded to `digits` decimals.
    pub fn num(&mut self, key: &str, value: f64, digits: i32, unit: &'static str) -> &mut Self {
        let scale = 10f64.powi(digits);
        let rounded = (value * scale).round() / scale;
        self.add(key, json!(rounded), unit)
    }

    /// Attaches the target to the last figure added.
    pub fn target(&mut self, target: &str) -> &mut Self {
        if let Some(last) = self.figures.last_mut() {
            last.target = Some(target.to_owned());
        }
        self
    }
}

#[derive(Debug, Clone)]
pub struct Report {
    pub scenario: String,
    pub description: String,
    pub settings: Value,
    pub sections: Vec<Section>,
    pub notes: Vec<String>,
    /// Whether everything the scenario asserts held (counts delivered, sessions held).
    pub ok: bool,
}

impl Report {
    pub fn to_json(&self, machine: &Value) -> Value {
        let figures = |section: &Section| {
            let mut map = Map::new();
            for f in &section.figures {
                map.insert(f.key.clone(), f.value.clone());
            }
            Value::Object(map)
        };
        let mut units = Map::new();
        let mut targets = Map::new();
        for section in &self.sections {
            for f in &section.figures {
                units.insert(f.key.clone(), json!(f.unit));
                if let Some(t) = &f.target {
                    targets.insert(f.key.clone(), json!(t));
                }
            }
        }
        let results = match self.sections.as_slice() {
            [one] => figures(one),
            many => Value::Array(
                many.iter()
                    .map(|s| {
                        let mut v = figures(s);
                        if let Value::Object(map) = &mut v {
                            map.insert("label".into(), json!(s.label));
                        }
                        v
                    })
                    .collect(),
            ),
        };
        json!({
            "scenario": self.scenario,
            "description": self.description,
            "ok": self.ok,
            "machine": machine,
            "settings": self.settings,
            "results": results,
            "units": units,
            "targets": targets,
            "notes": self.notes,
        })
    }

    /// Prints the report (JSON or a table); an error naming `failed` when its checks failed.
    pub fn emit(&self, machine: &Value, as_json: bool, failed: &str) -> anyhow::Result<()> {
        if as_json {
            println!("{}", self.to_json(machine));
        } else {
            self.print_table(machine);
        }
        if self.ok {
            Ok(())
        } else {
            Err(anyhow::anyhow!("{}: {failed} (see the report)", self.scenario))
        }
    }

    pub fn print_table(&self, machine: &Value) {
        println!("== {} — {}", self.scenario, self.description);
        println!(
            "   machine: {} cores, {} GiB, {}; commit {}{}; {} build",
            machine["cores"],
            machine["memory_gib"],
            machine["cpu"].as_str().unwrap_or("?"),
            machine["commit"].as_str().unwrap_or("?"),
            if machine["worktree_dirty"] == json!(true) {
                " (+ uncommitted changes)"
            } else {
                ""
            },
            machine["build"].as_str().unwrap_or("?"),
        );
        println!("   settings: {}", self.settings);
        for section in &self.sections {
            if self.sections.len() > 1 || !section.label.is_empty() {
                println!("-- {}", section.label);
            }
            let width = section.figures.iter().map(|f| f.key.len()).max().unwrap_or(0);
            for f in &section.figures {
                let value = match &f.value {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                let target = f
                    .target
                    .as_ref()
                    .map(|t| format!("   (target {t})"))
                    .unwrap_or_default();
                println!("   {:width$}  {:>14} {}{}", f.key, value, f.unit, target);
            }
        }
        for note in &self.notes {
            println!("   note: {note}");
        }
        println!("   result: {}", if self.ok { "ok" } else { "FAILED" });
        println!();
    }
}

/// One line of a plot: its name, its colour and its (x, y) points.
pub type Series<'a> = (&'a str, &'a str, Vec<(f64, f64)>);

/// A log-log plot of one or more series against group size, as SVG text.
pub fn svg_plot(title: &str, x_label: &str, series: &[Series<'_>]) -> String {
    let (w, h, left, right, top, bottom) = (720.0, 440.0, 80.0, 200.0, 40.0, 60.0);
    let points: Vec<(f64, f64)> = series
        .iter()
        .flat_map(|(_, _, p)| p.iter().copied())
        .filter(|(x, y)| *x > 0.0 && *y > 0.0)
        .collect();
    let lg = |v: f64| v.log10();
    let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for (x, y) in &points {
        x0 = x0.min(lg(*x));
        x1 = x1.max(lg(*x));
        y0 = y0.min(lg(*y));
        y1 = y1.max(lg(*y));
    }
    if points.is_empty() {
        (x0, x1, y0, y1) = (0.0, 1.0, 0.0, 1.0);
    }
    let (x0, x1) = (x0.floor(), x1.ceil().max(x0.floor() + 1.0));
    let (y0, y1) = (y0.floor(), y1.ceil().max(y0.floor() + 1.0));
    let px = |x: f64| left + (lg(x) - x0) / (x1 - x0) * (w - left - right);
    let py = |y: f64| h - bottom - (lg(y) - y0) / (y1 - y0) * (h - top - bottom);
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" font-family=\"sans-serif\" font-size=\"12\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
         <text x=\"{}\" y=\"22\" text-anchor=\"middle\" font-size=\"15\">{title}</text>\n",
        (w - right + left) / 2.0
    );
    let mut decade = x0;
    while decade <= x1 {
        let x = left + (decade - x0) / (x1 - x0) * (w - left - right);
        svg += &format!(
            "<line x1=\"{x}\" y1=\"{top}\" x2=\"{x}\" y2=\"{}\" stroke=\"#ddd\"/><text x=\"{x}\" y=\"{}\" text-anchor=\"middle\">{}</text>\n",
            h - bottom,
            h - bottom + 16.0,
            10f64.powf(decade)
        );
        decade += 1.0;
    }
    let mut decade = y0;
    while decade <= y1 {
        let y = h - bottom - (decade - y0) / (y1 - y0) * (h - top - bottom);
        svg += &format!(
            "<line x1=\"{left}\" y1=\"{y}\" x2=\"{}\" y2=\"{y}\" stroke=\"#ddd\"/><text x=\"{}\" y=\"{}\" text-anchor=\"end\">{}</text>\n",
            w - right,
            left - 6.0,
            y + 4.0,
            10f64.powf(decade)
        );
        decade += 1.0;
    }
    svg += &format!(
        "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">{x_label}</text>\n",
        (w - right + left) / 2.0,
        h - 20.0
    );
    for (i, (name, color, points)) in series.iter().enumerate() {
        let path: Vec<String> = points
            .iter()
            .filter(|(x, y)| *x > 0.0 && *y > 0.0)
            .map(|(x, y)| format!("{:.1},{:.1}", px(*x), py(*y)))
            .collect();
        svg += &format!(
            "<polyline fill=\"none\" stroke=\"{color}\" stroke-width=\"2\" points=\"{}\"/>\n",
            path.join(" ")
        );
        for (x, y) in points.iter().filter(|(x, y)| *x > 0.0 && *y > 0.0) {
            svg += &format!(
                "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"3.5\" fill=\"{color}\"/>\n",
                px(*x),
                py(*y)
            );
        }
        let ly = top + 20.0 + i as f64 * 20.0;
        svg += &format!(
            "<line x1=\"{}\" y1=\"{ly}\" x2=\"{}\" y2=\"{ly}\" stroke=\"{color}\" stroke-width=\"2\"/><text x=\"{}\" y=\"{}\">{name}</text>\n",
            w - right + 10.0,
            w - right + 30.0,
            w - right + 36.0,
            ly + 4.0
        );
    }
    svg += "</svg>\n";
    svg
}
