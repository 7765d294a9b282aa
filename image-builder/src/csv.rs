//! A small RFC 4180 CSV reader (quoted fields, doubled quotes, CRLF): an inventory
//! needs no more, and it keeps the `csv` crate and its dependencies out.

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum CsvError {
    #[error("line {line}: a quoted field is not closed")]
    UnclosedQuote { line: usize },
    #[error("line {line}: unexpected character after a closing quote")]
    AfterQuote { line: usize },
    #[error("the file has {rows} rows; at most {rows_max} are accepted")]
    TooManyRows { rows: usize, rows_max: usize },
}

/// Parses `text` into records of fields. Blank lines are skipped.
pub fn parse(text: &str, rows_max: usize) -> Result<Vec<Vec<String>>, CsvError> {
    let mut records = Vec::new();
    let mut record = Vec::new();
    let mut field = String::new();
    let mut chars = text.chars().peekable();
    let mut line = 1;
    let mut in_quotes = false;
    let mut after_quote = false;
    let mut quote_line = 0;
    while let Some(character) = chars.next() {
        if in_quotes {
            match character {
                '"' if chars.peek() == Some(&'"') => {
                    chars.next();
                    field.push('"');
                }
                '"' => {
                    in_quotes = false;
                    after_quote = true;
                }
                '\n' => {
                    line += 1;
                    field.push('\n');
                }
                _ => field.push(character),
            }
            continue;
        }
        match character {
            '"' if field.is_empty() && !after_quote => {
                in_quotes = true;
                quote_line = line;
            }
            ',' => {
                record.push(std::mem::take(&mut field));
                after_quote = false;
            }
            '\r' if chars.peek() == Some(&'\n') => {}
            '\n' => {
                record.push(std::mem::take(&mut field));
                after_quote = false;
                line += 1;
                if !(record.len() == 1 && record[0].is_empty()) {
                    records.push(std::mem::take(&mut record));
                } else {
                    record.clear();
                }
                if records.len() > rows_max {
                    return Err(CsvError::TooManyRows { rows: records.len(), rows_max });
                }
            }
            _ if after_quote => return Err(CsvError::AfterQuote { line }),
            _ => field.push(character),
        }
    }
    if in_quotes {
        return Err(CsvError::UnclosedQuote { line: quote_line });
    }
    if !field.is_empty() || !record.is_empty() || after_quote {
        record.push(field);
        records.push(record);
    }
    if records.len() > rows_max {
        return Err(CsvError::TooManyRows { rows: records.len(), rows_max });
    }
    Ok(records)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoted_fields_doubled_quotes_and_crlf() {
        let records = parse("a,b,c\r\n\"x, y\",\"say \"\"hi\"\"\",\n\n1,\"two\nlines\",3", 10).unwrap();
        assert_eq!(records, vec![vec!["a", "b", "c"], vec!["x, y", "say \"hi\"", ""], vec!["1", "two\nlines", "3"],]);
    }

    #[test]
    fn broken_quotes_and_too_many_rows_are_refused() {
        assert_eq!(parse("a,\"b\nc", 10), Err(CsvError::UnclosedQuote { line: 1 }));
        assert_eq!(parse("\"a\"b,c", 10), Err(CsvError::AfterQuote { line: 1 }));
        assert!(matches!(parse("a\nb\nc\n", 2), Err(CsvError::TooManyRows { .. })));
    }
}
