//! The Library service: shelves and books kept in memory, seeded with a few
//! of each. Shows success statuses and headers set through response
//! metadata (`x-http-status`, `location`) and errors with details.

use super::pb::{self, library_server::Library};
use super::rpc;
use prost::Message;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use tonic::{Request, Response, Status};

#[derive(Clone)]
pub struct LibraryService {
    state: Arc<Mutex<State>>,
}

struct State {
    shelves: BTreeMap<String, pb::Shelf>,
    books: BTreeMap<String, pb::Book>,
    next_id: u64,
}

impl Default for LibraryService {
    fn default() -> Self {
        let mut shelves = BTreeMap::new();
        let mut books = BTreeMap::new();
        for (id, theme) in [("1", "Fiction"), ("2", "History")] {
            shelves.insert(
                id.to_owned(),
                pb::Shelf {
                    name: format!("shelves/{id}"),
                    theme: theme.to_owned(),
                    book_count: 0,
                },
            );
        }
        let seed = [
            (
                "1",
                "1",
                "The Left Hand of Darkness",
                "Ursula K. Le Guin",
                pb::Genre::Fiction,
                304,
            ),
            (
                "1",
                "2",
                "Solaris",
                "Stanislaw Lem",
                pb::Genre::Fiction,
                204,
            ),
            (
                "2",
                "1",
                "The Guns of August",
                "Barbara W. Tuchman",
                pb::Genre::History,
                511,
            ),
        ];
        for (shelf, id, title, author, genre, pages) in seed {
            let name = format!("shelves/{shelf}/books/{id}");
            books.insert(
                name.clone(),
                pb::Book {
                    name,
                    title: title.to_owned(),
                    author: author.to_owned(),
                    genre: genre as i32,
                    pages,
                    published: Some(prost_types::Timestamp {
                        seconds: 0,
                        nanos: 0,
                    }),
                    ..Default::default()
                },
            );
        }
        LibraryService {
            state: Arc::new(Mutex::new(State {
                shelves,
                books,
                next_id: 100,
            })),
        }
    }
}

/// A NOT_FOUND status carrying a google.rpc.ResourceInfo detail.
fn not_found(kind: &str, name: &str) -> Status {
    let info = rpc::ResourceInfo {
        resource_type: kind.to_owned(),
        resource_name: name.to_owned(),
        owner: String::new(),
        description: format!("no {kind} named {name}"),
    };
    let status = rpc::Status {
        code: tonic::Code::NotFound as i32,
        message: format!("{kind} {name} not found"),
        details: vec![prost_types::Any {
            type_url: "type.googleapis.com/google.rpc.ResourceInfo".to_owned(),
            value: info.encode_to_vec(),
        }],
    };
    Status::with_details(
        tonic::Code::NotFound,
        status.message.clone(),
        status.encode_to_vec().into(),
    )
}

fn with_status<T>(message: T, code: u16) -> Response<T> {
    let mut resp = Response::new(message);
    resp.metadata_mut().insert(
        "x-http-status",
        code.to_string().parse().expect("digits are ASCII"),
    );
    resp
}

impl LibraryService {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn book(&self, name: &str) -> Result<pb::Book, Status> {
        self.state()
            .books
            .get(name)
            .cloned()
            .ok_or_else(|| not_found("book", name))
    }
}

#[tonic::async_trait]
impl Library for LibraryService {
    async fn get_shelf(
        &self,
        req: Request<pb::GetShelfRequest>,
    ) -> Result<Response<pb::Shelf>, Status> {
        let id = req.into_inner().shelf;
        let state = self.state();
        let mut shelf = state
            .shelves
            .get(&id)
            .cloned()
            .ok_or_else(|| not_found("shelf", &format!("shelves/{id}")))?;
        let prefix = format!("{}/books/", shelf.name);
        shelf.book_count = state
            .books
            .keys()
            .filter(|k| k.starts_with(&prefix))
            .count() as i32;
        Ok(Response::new(shelf))
    }

    async fn list_books(
        &self,
        req: Request<pb::ListBooksRequest>,
    ) -> Result<Response<pb::ListBooksResponse>, Status> {
        let r = req.into_inner();
        let prefix = format!("{}/books/", r.parent);
        let limit = if r.page_size > 0 {
            r.page_size as usize
        } else {
            usize::MAX
        };
        let books = self
            .state()
            .books
            .values()
            .filter(|b| b.name.starts_with(&prefix))
            .filter(|b| r.genre == 0 || b.genre == r.genre)
            .take(limit)
            .cloned()
            .collect();
        Ok(Response::new(pb::ListBooksResponse { books }))
    }

    async fn get_book(
        &self,
        req: Request<pb::GetBookRequest>,
    ) -> Result<Response<pb::Book>, Status> {
        Ok(Response::new(self.book(&req.into_inner().name)?))
    }

    async fn create_book(
        &self,
        req: Request<pb::CreateBookRequest>,
    ) -> Result<Response<pb::Book>, Status> {
        let r = req.into_inner();
        let mut state = self.state();
        let shelf_id = r.parent.strip_prefix("shelves/").unwrap_or("");
        if !state.shelves.contains_key(shelf_id) {
            return Err(not_found("shelf", &r.parent));
        }
        let mut book = r
            .book
            .ok_or_else(|| Status::invalid_argument("book is required"))?;
        if book.title.is_empty() {
            return Err(Status::invalid_argument("book.title is required"));
        }
        let id = if r.book_id.is_empty() {
            state.next_id += 1;
            state.next_id.to_string()
        } else {
            r.book_id
        };
        book.name = format!("{}/books/{id}", r.parent);
        if state.books.contains_key(&book.name) {
            return Err(Status::already_exists(format!(
                "book {} already exists",
                book.name
            )));
        }
        state.books.insert(book.name.clone(), book.clone());
        let location = format!("/v1/{}", book.name);
        let mut resp = with_status(book, 201);
        resp.metadata_mut().insert(
            "location",
            location.parse().map_err(|_| Status::internal("bad name"))?,
        );
        Ok(resp)
    }

    async fn update_book(
        &self,
        req: Request<pb::UpdateBookRequest>,
    ) -> Result<Response<pb::Book>, Status> {
        let r = req.into_inner();
        let patch = r
            .book
            .ok_or_else(|| Status::invalid_argument("book is required"))?;
        let mut state = self.state();
        let book = state
            .books
            .get_mut(&patch.name)
            .ok_or_else(|| not_found("book", &patch.name))?;
        let paths = r.update_mask.map(|m| m.paths).unwrap_or_default();
        if paths.is_empty() {
            *book = patch;
        } else {
            for path in &paths {
                match path.as_str() {
                    "title" => book.title = patch.title.clone(),
                    "author" => book.author = patch.author.clone(),
                    "genre" => book.genre = patch.genre,
                    "pages" => book.pages = patch.pages,
                    "labels" => book.labels = patch.labels.clone(),
                    "published" => book.published = patch.published,
                    "name" => {}
                    other => {
                        return Err(Status::invalid_argument(format!(
                            "update_mask: cannot update {other}"
                        )))
                    }
                }
            }
        }
        let mut resp = Response::new(book.clone());
        resp.metadata_mut().insert(
            "x-update-mask",
            paths
                .join(",")
                .parse()
                .map_err(|_| Status::internal("bad mask"))?,
        );
        Ok(resp)
    }

    async fn delete_book(
        &self,
        req: Request<pb::DeleteBookRequest>,
    ) -> Result<Response<()>, Status> {
        let name = req.into_inner().name;
        self.state()
            .books
            .remove(&name)
            .ok_or_else(|| not_found("book", &name))?;
        Ok(with_status((), 204))
    }

    async fn archive_book(
        &self,
        req: Request<pb::ArchiveBookRequest>,
    ) -> Result<Response<pb::Book>, Status> {
        let r = req.into_inner();
        let mut state = self.state();
        let book = state
            .books
            .get_mut(&r.name)
            .ok_or_else(|| not_found("book", &r.name))?;
        book.archived = true;
        if !r.reason.is_empty() {
            book.labels.insert("archived-because".to_owned(), r.reason);
        }
        Ok(Response::new(book.clone()))
    }

    async fn get_book_title(
        &self,
        req: Request<pb::GetBookRequest>,
    ) -> Result<Response<pb::Book>, Status> {
        Ok(Response::new(self.book(&req.into_inner().name)?))
    }

    async fn get_cover(
        &self,
        req: Request<pb::GetBookRequest>,
    ) -> Result<Response<super::HttpBody>, Status> {
        let book = self.book(&req.into_inner().name)?;
        let svg = format!(
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"200\" height=\"300\"><text x=\"10\" y=\"150\">{}</text></svg>",
            book.title.replace('&', "&amp;").replace('<', "&lt;")
        );
        Ok(Response::new(super::HttpBody {
            content_type: "image/svg+xml".to_owned(),
            data: svg.into_bytes(),
            extensions: Vec::new(),
        }))
    }

    async fn put_cover(
        &self,
        req: Request<pb::PutCoverRequest>,
    ) -> Result<Response<pb::CoverInfo>, Status> {
        let r = req.into_inner();
        self.book(&r.name)?;
        let cover = r.cover.unwrap_or_default();
        Ok(Response::new(pb::CoverInfo {
            name: r.name,
            content_type: cover.content_type,
            size: cover.data.len() as i64,
        }))
    }

    async fn search_books(
        &self,
        req: Request<pb::SearchBooksRequest>,
    ) -> Result<Response<pb::SearchBooksResponse>, Status> {
        let r = req.into_inner();
        let query = r.query.to_lowercase();
        let books = self
            .state()
            .books
            .values()
            .filter(|b| !query.is_empty() && b.title.to_lowercase().contains(&query))
            .cloned()
            .collect();
        Ok(Response::new(pb::SearchBooksResponse {
            received: Some(r),
            books,
        }))
    }

    async fn get_file(
        &self,
        req: Request<pb::GetFileRequest>,
    ) -> Result<Response<pb::File>, Status> {
        let path = req.into_inner().path;
        Ok(Response::new(pb::File {
            size: path.len() as i64,
            path,
        }))
    }

    async fn stats(
        &self,
        req: Request<pb::StatsRequest>,
    ) -> Result<Response<pb::StatsResponse>, Status> {
        let include_archived = req.into_inner().include_archived;
        let state = self.state();
        let books = state
            .books
            .values()
            .filter(|b| include_archived || !b.archived)
            .count() as i32;
        Ok(Response::new(pb::StatsResponse {
            shelves: state.shelves.len() as i32,
            books,
        }))
    }
}
