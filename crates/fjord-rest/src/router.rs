//! Routing of `/fhir/{tenant}/…` by path segments to the FHIR interactions.

use actix_web::http::{Method, StatusCode};
use actix_web::web::{self, Data};
use actix_web::{HttpMessage, HttpRequest, HttpResponse, ResponseError};

use crate::error::ApiError;
use crate::negotiate::lenient;
use crate::{
    batch, capability, export, import, reindex, resources, search, subscriptions, terminology,
    validate, AppState,
};
use fjord_engine::{ExportLevel, Scope};

/// The FHIR interaction a request names, with its path parameters.
#[derive(Debug, PartialEq)]
enum Route<'a> {
    Metadata(&'a str),
    /// `.well-known/smart-configuration`.
    SmartConfiguration(&'a str),
    SystemHistory(&'a str),
    TypeHistory(&'a str, &'a str),
    InstanceHistory(&'a str, &'a str, &'a str),
    Vread(&'a str, &'a str, &'a str, &'a str),
    Read(&'a str, &'a str, &'a str),
    Update(&'a str, &'a str, &'a str),
    Delete(&'a str, &'a str, &'a str),
    Create(&'a str, &'a str),
    /// `POST /`: a batch or transaction.
    Bundle(&'a str),
    /// `PUT /{type}?criteria`.
    ConditionalUpdate(&'a str, &'a str),
    /// `DELETE /{type}?criteria`.
    ConditionalDelete(&'a str, &'a str),
    /// `PATCH /{type}/{id}`, or without an id `PATCH /{type}?criteria`.
    Patch(&'a str, &'a str, Option<&'a str>),
    /// `$reindex` of every type, or of one.
    Reindex(&'a str, Option<&'a str>),
    ReindexStatus(&'a str, &'a str),
    /// `$import` of an NDJSON body, its status, its cancellation.
    Import(&'a str),
    ImportStatus(&'a str, &'a str),
    ImportCancel(&'a str, &'a str),
    /// `$export` at system, Patient or Group level; its status, cancellation and files.
    Export(&'a str, ExportAt<'a>),
    ExportStatus(&'a str, &'a str),
    ExportCancel(&'a str, &'a str),
    ExportFile(&'a str, &'a str, &'a str),
    /// `Patient/{id}/$everything`.
    Everything(&'a str, &'a str),
    /// A terminology operation on ValueSet or CodeSystem, at type or instance level.
    Terminology(&'a str, &'a str, Option<&'a str>, terminology::Operation),
    /// `Subscription/$status`, `Subscription/{id}/$status`, `$events`, `$get-ws-binding-token`.
    Subscription(&'a str, Option<&'a str>, subscriptions::Operation),
    /// The websocket subscriptions are delivered over.
    SubscriptionSocket(&'a str),
    /// `{type}/$validate` or `{type}/{id}/$validate`.
    Validate(&'a str, &'a str, Option<&'a str>),
    /// `scope` is a `Scope` without its borrowed parts, for matching in tests.
    Search(&'a str, SearchAt<'a>),
    SearchPost(&'a str, SearchAt<'a>),
    /// A known path with a method it does not take: 405.
    MethodNotAllowed,
    /// No FHIR path: 404.
    Unknown,
}

/// Whose data an export covers, as the path says.
#[derive(Debug, PartialEq)]
enum ExportAt<'a> {
    System,
    Patient,
    Group(&'a str),
}

/// Where a search looks, as the path says.
#[derive(Debug, PartialEq)]
enum SearchAt<'a> {
    System,
    Type(&'a str),
    /// Owner type, owner id, and the member type or `*`.
    Compartment(&'a str, &'a str, &'a str),
}

impl<'a> SearchAt<'a> {
    fn scope(&self) -> Scope<'a> {
        match *self {
            SearchAt::System => Scope::System,
            SearchAt::Type(t) => Scope::Type(t),
            SearchAt::Compartment(owner_type, owner_id, member) => Scope::Compartment {
                owner_type,
                owner_id,
                resource_type: (member != "*").then_some(member),
            },
        }
    }
}

impl Route<'_> {
    /// What the metrics call this request: its interaction or operation, and the resource type
    /// its path names (checked by the caller before it becomes a label).
    fn metric_labels(&self) -> (&'static str, Option<&str>) {
        match *self {
            Route::Metadata(_) => ("capabilities", None),
            Route::SmartConfiguration(_) => ("smart-configuration", None),
            Route::SystemHistory(_) => ("history-system", None),
            Route::TypeHistory(_, ty) => ("history-type", Some(ty)),
            Route::InstanceHistory(_, ty, _) => ("history-instance", Some(ty)),
            Route::Vread(_, ty, _, _) => ("vread", Some(ty)),
            Route::Read(_, ty, _) => ("read", Some(ty)),
            Route::Update(_, ty, _) | Route::ConditionalUpdate(_, ty) => ("update", Some(ty)),
            Route::Delete(_, ty, _) | Route::ConditionalDelete(_, ty) => ("delete", Some(ty)),
            Route::Create(_, ty) => ("create", Some(ty)),
            Route::Patch(_, ty, _) => ("patch", Some(ty)),
            Route::Bundle(_) => ("batch-transaction", None),
            Route::Reindex(_, ty) => ("$reindex", ty),
            Route::ReindexStatus(..) => ("$reindex", None),
            Route::Import(_) | Route::ImportStatus(..) | Route::ImportCancel(..) => {
                ("$import", None)
            }
            Route::Export(_, ExportAt::System) => ("$export", None),
            Route::Export(_, ExportAt::Patient) => ("$export", Some("Patient")),
            Route::Export(_, ExportAt::Group(_)) => ("$export", Some("Group")),
            Route::ExportStatus(..) | Route::ExportCancel(..) | Route::ExportFile(..) => {
                ("$export", None)
            }
            Route::Everything(..) => ("$everything", Some("Patient")),
            Route::Terminology(_, ty, _, op) => (
                match op {
                    terminology::Operation::Expand => "$expand",
                    terminology::Operation::Lookup => "$lookup",
                    terminology::Operation::ValidateCode => "$validate-code",
                },
                Some(ty),
            ),
            Route::Subscription(_, _, op) => (
                match op {
                    subscriptions::Operation::Status => "$status",
                    subscriptions::Operation::Events => "$events",
                    subscriptions::Operation::BindingToken => "$get-ws-binding-token",
                },
                Some("Subscription"),
            ),
            Route::SubscriptionSocket(_) => ("subscription-websocket", None),
            Route::Validate(_, ty, _) => ("$validate", Some(ty)),
            Route::Search(_, ref at) | Route::SearchPost(_, ref at) => match *at {
                SearchAt::System => ("search-system", None),
                SearchAt::Type(ty) => ("search-type", Some(ty)),
                SearchAt::Compartment(_, _, "*") => ("search-compartment", None),
                SearchAt::Compartment(_, _, ty) => ("search-compartment", Some(ty)),
            },
            Route::MethodNotAllowed | Route::Unknown => ("other", None),
        }
    }
}

fn route<'a>(method: &Method, path: &'a str) -> Route<'a> {
    let Some(rest) = path.strip_prefix("/fhir/") else {
        return Route::Unknown;
    };
    let segments: Vec<&str> = rest.trim_end_matches('/').split('/').collect();
    let get = method == Method::GET;
    let get_or_post = get || method == Method::POST;
    match (segments.as_slice(), method) {
        ([t], _) if get => Route::Search(t, SearchAt::System),
        ([t, "$reindex"], &Method::POST) => Route::Reindex(t, None),
        ([t, "$import"], &Method::POST) => Route::Import(t),
        ([t, "$import", job], _) if get => Route::ImportStatus(t, job),
        ([t, "$import", job], &Method::DELETE) => Route::ImportCancel(t, job),
        ([t, "$export"], _) if get_or_post => Route::Export(t, ExportAt::System),
        ([t, "Patient", "$export"], _) if get_or_post => Route::Export(t, ExportAt::Patient),
        ([t, "Group", id, "$export"], _) if get_or_post => Route::Export(t, ExportAt::Group(id)),
        ([t, "$export", job], _) if get => Route::ExportStatus(t, job),
        ([t, "$export", job], &Method::DELETE) => Route::ExportCancel(t, job),
        ([t, "$export", job, file], _) if get => Route::ExportFile(t, job, file),
        ([t, "$reindex", job], _) if get => Route::ReindexStatus(t, job),
        ([t, ty, "$reindex"], &Method::POST) => Route::Reindex(t, Some(ty)),
        ([t, ty @ "ValueSet", op @ ("$expand" | "$validate-code")], _) if get_or_post => {
            Route::Terminology(t, ty, None, terminology_operation(op))
        }
        ([t, ty @ "ValueSet", id, op @ ("$expand" | "$validate-code")], _) if get_or_post => {
            Route::Terminology(t, ty, Some(id), terminology_operation(op))
        }
        ([t, ty @ "CodeSystem", op @ ("$lookup" | "$validate-code")], _) if get_or_post => {
            Route::Terminology(t, ty, None, terminology_operation(op))
        }
        ([t, ty @ "CodeSystem", id, "$validate-code"], _) if get_or_post => {
            Route::Terminology(t, ty, Some(id), terminology::Operation::ValidateCode)
        }
        ([t, "Subscription", "$status"], _) if get_or_post => {
            Route::Subscription(t, None, subscriptions::Operation::Status)
        }
        ([t, "Subscription", id, "$status"], _) if get_or_post => {
            Route::Subscription(t, Some(id), subscriptions::Operation::Status)
        }
        ([t, "Subscription", id, "$events"], _) if get_or_post => {
            Route::Subscription(t, Some(id), subscriptions::Operation::Events)
        }
        ([t, "Subscription", id, "$get-ws-binding-token"], _) if get_or_post => {
            Route::Subscription(t, Some(id), subscriptions::Operation::BindingToken)
        }
        ([t, "$subscription-websocket"], _) if get => Route::SubscriptionSocket(t),
        ([t, ty, "$validate"], &Method::POST) => Route::Validate(t, ty, None),
        ([t, ty, id, "$validate"], &Method::POST) => Route::Validate(t, ty, Some(id)),
        ([t, ty, id, "$validate"], _) if get => Route::Validate(t, ty, Some(id)),
        ([_, _, "$validate"] | [_, _, _, "$validate"], _) => Route::MethodNotAllowed,
        ([t, "_search"], &Method::POST) => Route::SearchPost(t, SearchAt::System),
        ([t, "metadata"], _) if get => Route::Metadata(t),
        ([t, ".well-known", "smart-configuration"], _) if get => Route::SmartConfiguration(t),
        ([t, "_history"], _) if get => Route::SystemHistory(t),
        ([_, "metadata" | "_history"], _) => Route::MethodNotAllowed,
        ([t], &Method::POST) => Route::Bundle(t),
        ([t, ty, "_history"], _) if get => Route::TypeHistory(t, ty),
        ([t, ty, id, "_history"], _) if get => Route::InstanceHistory(t, ty, id),
        ([t, ty, id, "_history", v], _) if get => Route::Vread(t, ty, id, v),
        ([_, _, "_history"] | [_, _, _, "_history"] | [_, _, _, "_history", _], _) => {
            Route::MethodNotAllowed
        }
        ([t, ty, "_search"], &Method::POST) => Route::SearchPost(t, SearchAt::Type(ty)),
        ([t, "Patient", id, "$everything"], _) if get => Route::Everything(t, id),
        ([t, owner, id, ty], _) if get => Route::Search(t, SearchAt::Compartment(owner, id, ty)),
        ([t, owner, id, ty, "_search"], &Method::POST) => {
            Route::SearchPost(t, SearchAt::Compartment(owner, id, ty))
        }
        ([t, ty, id], _) if get => Route::Read(t, ty, id),
        ([t, ty, id], &Method::PUT) => Route::Update(t, ty, id),
        ([t, ty, id], &Method::DELETE) => Route::Delete(t, ty, id),
        ([t, ty, id], &Method::PATCH) => Route::Patch(t, ty, Some(id)),
        ([_, _, _], _) => Route::MethodNotAllowed,
        ([t, ty], &Method::POST) => Route::Create(t, ty),
        ([t, ty], &Method::GET) => Route::Search(t, SearchAt::Type(ty)),
        ([t, ty], &Method::PUT) => Route::ConditionalUpdate(t, ty),
        ([t, ty], &Method::DELETE) => Route::ConditionalDelete(t, ty),
        ([t, ty], &Method::PATCH) => Route::Patch(t, ty, None),
        ([_, _], _) => Route::MethodNotAllowed,
        _ => Route::Unknown,
    }
}

fn terminology_operation(name: &str) -> terminology::Operation {
    match name {
        "$expand" => terminology::Operation::Expand,
        "$lookup" => terminology::Operation::Lookup,
        _ => terminology::Operation::ValidateCode,
    }
}

/// The tenant a `/fhir/{tenant}/…` path names.
pub(crate) fn tenant_of(path: &str) -> Option<&str> {
    let rest = path.strip_prefix("/fhir/")?;
    let tenant = rest.split('/').next()?;
    (!tenant.is_empty()).then_some(tenant)
}

/// The settings of the tenant a `/fhir/{tenant}/…` request names, for the layers in front of the
/// handlers (CORS, rate and time limits): `None` outside `/fhir/` and for an unknown tenant
/// (the handler's 404). Read from the engine's tenant cache, so each layer's look costs no I/O.
pub(crate) async fn tenant_settings(
    req: &actix_web::dev::ServiceRequest,
) -> Option<fjord_engine::TenantSettings> {
    let tenant = tenant_of(req.path())?;
    let state = req.app_data::<Data<AppState>>()?;
    state.engine.tenant(tenant).await.ok().map(|t| t.settings)
}

/// Serves every request that no static route took.
pub(crate) async fn dispatch(
    req: HttpRequest,
    state: Data<AppState>,
    payload: web::Payload,
) -> HttpResponse {
    let path = req.path().to_owned();
    let route = route(req.method(), &path);
    let (interaction, resource_type) = route.metric_labels();
    let resource_type = resource_type.and_then(|t| state.engine.resource_type(t).ok());
    req.extensions_mut().insert(crate::metrics::Routed {
        interaction,
        resource_type,
    });
    let result = match route {
        Route::Metadata(t) => capability::metadata(&req, &state, t).await,
        Route::SmartConfiguration(t) => capability::smart_configuration(&req, &state, t).await,
        Route::SystemHistory(t) => resources::history(&req, &state, t, None, None).await,
        Route::TypeHistory(t, ty) => resources::history(&req, &state, t, Some(ty), None).await,
        Route::InstanceHistory(t, ty, id) => {
            resources::history(&req, &state, t, Some(ty), Some(id)).await
        }
        Route::Vread(t, ty, id, v) => resources::vread(&req, &state, t, ty, id, v).await,
        Route::Read(t, ty, id) => resources::read(&req, &state, t, ty, id).await,
        Route::Update(t, ty, id) => resources::update(&req, &state, t, ty, Some(id), payload).await,
        Route::Delete(t, ty, id) => resources::delete(&req, &state, t, ty, Some(id)).await,
        Route::Bundle(t) => batch::bundle(&req, &state, t, payload).await,
        Route::Create(t, ty) => resources::create(&req, &state, t, ty, payload).await,
        Route::ConditionalUpdate(t, ty) => {
            resources::update(&req, &state, t, ty, None, payload).await
        }
        Route::ConditionalDelete(t, ty) => resources::delete(&req, &state, t, ty, None).await,
        Route::Patch(t, ty, id) => resources::patch(&req, &state, t, ty, id, payload).await,
        Route::Reindex(t, ty) => reindex::start(&req, &state, t, ty).await,
        Route::ReindexStatus(t, job) => reindex::status(&req, &state, t, job).await,
        Route::Import(t) => import::start(&req, &state, t, payload).await,
        Route::ImportStatus(t, job) => import::status(&req, &state, t, job).await,
        Route::ImportCancel(t, job) => import::cancel(&req, &state, t, job).await,
        Route::Export(t, at) => {
            let level = match at {
                ExportAt::System => ExportLevel::System,
                ExportAt::Patient => ExportLevel::Patient,
                ExportAt::Group(id) => ExportLevel::Group(id.to_owned()),
            };
            export::kick_off(&req, &state, t, level, payload).await
        }
        Route::ExportStatus(t, job) => export::status(&req, &state, t, job).await,
        Route::ExportCancel(t, job) => export::cancel(&req, &state, t, job).await,
        Route::ExportFile(t, job, file) => export::file(&req, &state, t, job, file).await,
        Route::Everything(t, id) => search::everything(&req, &state, t, id).await,
        Route::Subscription(t, id, op) => {
            subscriptions::operation(&req, &state, t, id, op, payload).await
        }
        Route::SubscriptionSocket(t) => subscriptions::websocket(&req, &state, t, payload).await,
        Route::Validate(t, ty, id) => validate::validate(&req, &state, t, ty, id, payload).await,
        Route::Terminology(t, ty, id, op) => {
            terminology::operation(&req, &state, t, ty, id, op, payload).await
        }
        Route::Search(t, at) => search::search(&req, &state, t, at.scope(), None).await,
        Route::SearchPost(t, at) => {
            search::search(&req, &state, t, at.scope(), Some(payload)).await
        }
        Route::MethodNotAllowed => Err(ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "not-supported",
            format!("{} is not allowed on {path}", req.method()),
        )),
        Route::Unknown => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not-found",
            format!("no such endpoint: {path}"),
        )),
    };
    result.unwrap_or_else(|error| {
        let error = if error.format == Default::default() {
            error.in_format(lenient(&req))
        } else {
            error
        };
        error.error_response()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(method: Method, path: &str, expected: Route<'_>) {
        assert_eq!(route(&method, path), expected, "{method} {path}");
    }

    #[test]
    fn routes() {
        check(Method::GET, "/fhir/t/metadata", Route::Metadata("t"));
        check(
            Method::GET,
            "/fhir/t/.well-known/smart-configuration",
            Route::SmartConfiguration("t"),
        );
        check(Method::GET, "/fhir/t/_history", Route::SystemHistory("t"));
        check(
            Method::GET,
            "/fhir/t/Patient/_history",
            Route::TypeHistory("t", "Patient"),
        );
        check(
            Method::GET,
            "/fhir/t/Patient/p/_history",
            Route::InstanceHistory("t", "Patient", "p"),
        );
        check(
            Method::GET,
            "/fhir/t/Patient/p/_history/2",
            Route::Vread("t", "Patient", "p", "2"),
        );
        check(
            Method::GET,
            "/fhir/t/Patient/p",
            Route::Read("t", "Patient", "p"),
        );
        check(
            Method::GET,
            "/fhir/t/Patient/p/",
            Route::Read("t", "Patient", "p"),
        );
        check(
            Method::PUT,
            "/fhir/t/Patient/p",
            Route::Update("t", "Patient", "p"),
        );
        check(
            Method::DELETE,
            "/fhir/t/Patient/p",
            Route::Delete("t", "Patient", "p"),
        );
        check(
            Method::POST,
            "/fhir/t/Patient",
            Route::Create("t", "Patient"),
        );
        check(
            Method::GET,
            "/fhir/t/Patient",
            Route::Search("t", SearchAt::Type("Patient")),
        );
        check(
            Method::POST,
            "/fhir/t/Patient/_search",
            Route::SearchPost("t", SearchAt::Type("Patient")),
        );
        check(
            Method::DELETE,
            "/fhir/t/Patient",
            Route::ConditionalDelete("t", "Patient"),
        );
        check(
            Method::PUT,
            "/fhir/t/Patient",
            Route::ConditionalUpdate("t", "Patient"),
        );
        check(Method::POST, "/fhir/t", Route::Bundle("t"));
        check(
            Method::PATCH,
            "/fhir/t/Patient/p",
            Route::Patch("t", "Patient", Some("p")),
        );
        check(
            Method::PATCH,
            "/fhir/t/Patient",
            Route::Patch("t", "Patient", None),
        );
        check(Method::POST, "/fhir/t/Patient/p", Route::MethodNotAllowed);
        check(Method::DELETE, "/fhir/t/metadata", Route::MethodNotAllowed);
        check(
            Method::PUT,
            "/fhir/t/Patient/p/_history/1",
            Route::MethodNotAllowed,
        );
        check(
            Method::GET,
            "/fhir/t/Patient/p/_history/1/x",
            Route::Unknown,
        );
        check(Method::GET, "/fhir/t", Route::Search("t", SearchAt::System));
        check(
            Method::POST,
            "/fhir/t/_search",
            Route::SearchPost("t", SearchAt::System),
        );
        check(
            Method::GET,
            "/fhir/t/Patient/p/Observation",
            Route::Search("t", SearchAt::Compartment("Patient", "p", "Observation")),
        );
        check(
            Method::POST,
            "/fhir/t/Patient/p/*/_search",
            Route::SearchPost("t", SearchAt::Compartment("Patient", "p", "*")),
        );
        check(
            Method::GET,
            "/fhir/t/Patient/p/$everything",
            Route::Everything("t", "p"),
        );
        check(Method::POST, "/fhir/t/$reindex", Route::Reindex("t", None));
        check(
            Method::POST,
            "/fhir/t/Patient/$reindex",
            Route::Reindex("t", Some("Patient")),
        );
        check(
            Method::GET,
            "/fhir/t/$reindex/j1",
            Route::ReindexStatus("t", "j1"),
        );
        check(Method::POST, "/fhir/t/$import", Route::Import("t"));
        check(
            Method::GET,
            "/fhir/t/$export",
            Route::Export("t", ExportAt::System),
        );
        check(
            Method::POST,
            "/fhir/t/Patient/$export",
            Route::Export("t", ExportAt::Patient),
        );
        check(
            Method::GET,
            "/fhir/t/Group/g/$export",
            Route::Export("t", ExportAt::Group("g")),
        );
        check(
            Method::GET,
            "/fhir/t/$export/j",
            Route::ExportStatus("t", "j"),
        );
        check(
            Method::DELETE,
            "/fhir/t/$export/j",
            Route::ExportCancel("t", "j"),
        );
        check(
            Method::GET,
            "/fhir/t/$export/j/Patient.ndjson",
            Route::ExportFile("t", "j", "Patient.ndjson"),
        );
        check(
            Method::GET,
            "/fhir/t/$import/j",
            Route::ImportStatus("t", "j"),
        );
        check(
            Method::DELETE,
            "/fhir/t/$import/j",
            Route::ImportCancel("t", "j"),
        );
        check(Method::GET, "/other", Route::Unknown);
    }
}
