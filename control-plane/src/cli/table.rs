//! A tiny column-aligned table for people: a header row, left-aligned cells padded to
//! the widest value of their column, and optional free-text lines under a row (for a
//! message too long to squeeze into a column, such as a NACK).
//!
//! Widths count characters, not bytes, so a non-ASCII label does not skew a column.
//! No external crate: the tables are small and this is all they need.

/// Columns are separated by this many spaces, as in kubectl.
const GAP: usize = 3;

#[derive(Debug, Default)]
pub struct Table {
    headers: Vec<String>,
    rows: Vec<Row>,
}

#[derive(Debug)]
struct Row {
    cells: Vec<String>,
    notes: Vec<String>,
}

impl Table {
    pub fn new<I, S>(headers: I) -> Table
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Table {
            headers: headers.into_iter().map(Into::into).collect(),
            rows: Vec::new(),
        }
    }

    /// Adds a row; missing cells print empty, extra cells are kept and widen the table.
    pub fn row<I, S>(&mut self, cells: I) -> &mut Table
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.rows.push(Row {
            cells: cells.into_iter().map(Into::into).collect(),
            notes: Vec::new(),
        });
        self
    }

    /// Adds a line printed in full, indented, under the last row.
    pub fn note(&mut self, text: impl Into<String>) -> &mut Table {
        if let Some(row) = self.rows.last_mut() {
            row.notes.push(text.into());
        }
        self
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    pub fn render(&self) -> String {
        let columns = self
            .rows
            .iter()
            .map(|r| r.cells.len())
            .chain([self.headers.len()])
            .max()
            .unwrap_or(0);
        let mut widths = vec![0; columns];
        for cells in [&self.headers]
            .into_iter()
            .chain(self.rows.iter().map(|r| &r.cells))
        {
            for (width, cell) in widths.iter_mut().zip(cells) {
                *width = (*width).max(cell.chars().count());
            }
        }
        let mut out = String::new();
        write_line(&mut out, &self.headers, &widths);
        for row in &self.rows {
            write_line(&mut out, &row.cells, &widths);
            for note in &row.notes {
                out.push_str("    ");
                out.push_str(note);
                out.push('\n');
            }
        }
        out
    }
}

fn write_line(out: &mut String, cells: &[String], widths: &[usize]) {
    let mut line = String::new();
    for (i, width) in widths.iter().enumerate() {
        let cell = cells.get(i).map(String::as_str).unwrap_or("");
        line.push_str(cell);
        if i + 1 < widths.len() {
            let pad = width - cell.chars().count() + GAP;
            line.extend(std::iter::repeat_n(' ', pad));
        }
    }
    // The last column is not padded, but an empty last cell leaves the gap before it.
    out.push_str(line.trim_end());
    out.push('\n');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_align_to_the_widest_cell() {
        let mut table = Table::new(["NAME", "PORTS"]);
        table.row(["orders", "80"]).row(["a", "8080,9090"]);
        assert_eq!(
            table.render(),
            "NAME     PORTS\n\
             orders   80\n\
             a        8080,9090\n"
        );
    }

    #[test]
    fn header_wider_than_cells_sets_the_width() {
        let mut table = Table::new(["NAMESPACE", "X"]);
        table.row(["a", "b"]);
        assert_eq!(table.render(), "NAMESPACE   X\na           b\n");
    }

    #[test]
    fn widths_count_characters_not_bytes() {
        let mut table = Table::new(["A", "B"]);
        table.row(["été", "x"]).row(["abcd", "y"]);
        assert_eq!(table.render(), "A      B\nété    x\nabcd   y\n");
    }

    #[test]
    fn empty_trailing_cells_leave_no_trailing_spaces() {
        let mut table = Table::new(["A", "B"]);
        table.row(["a", ""]).row(["long"]);
        assert_eq!(table.render(), "A      B\na\nlong\n");
    }

    #[test]
    fn notes_print_in_full_under_their_row_without_widening_columns() {
        let mut table = Table::new(["ID", "STATE"]);
        table
            .row(["p1", "NACKED"])
            .note("a very long message that should not widen the table")
            .row(["p2", "SYNCED"]);
        assert_eq!(
            table.render(),
            "ID   STATE\n\
             p1   NACKED\n    a very long message that should not widen the table\n\
             p2   SYNCED\n"
        );
    }

    #[test]
    fn a_table_without_rows_is_just_its_header() {
        let table = Table::new(["A", "B"]);
        assert!(table.is_empty());
        assert_eq!(table.render(), "A   B\n");
    }
}
