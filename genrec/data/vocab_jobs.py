"""Word lists of the synthetic job market: industries -> job families -> roles, skills, cities, names.

Kept apart from the sampler (genrec/data/synth.py) so the vocabulary can be read and edited on its
own. The hierarchy is what gives a semantic-ID tokenizer coarse-to-fine structure to find:
industry (12) > family (3 per industry) > role (3 per family) > seniority / city / company.

Each role is `(name, core skills, duty)`: `duty` is a verb phrase in base form ("build ...") used in
descriptions. Family and industry skills are shared by every role below them; `CROSS_SKILLS` are
drawn by jobs and applicants of any industry.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Role:
    name: str
    skills: tuple[str, ...]
    duty: str


@dataclass(frozen=True)
class Family:
    name: str
    skills: tuple[str, ...]
    roles: tuple[Role, ...]


@dataclass(frozen=True)
class Industry:
    name: str
    share: float  # relative share of postings and of applicants
    skills: tuple[str, ...]
    company_suffixes: tuple[str, ...]
    families: tuple[Family, ...]
    city_boost: tuple[tuple[str, float], ...] = ()  # cities where this industry is over-represented


def _r(name: str, skills: str, duty: str) -> Role:
    return Role(name, tuple(s.strip() for s in skills.split(",")), duty)


def _f(name: str, skills: str, *roles: Role) -> Family:
    return Family(name, tuple(s.strip() for s in skills.split(",")), roles)


SENIORITY: tuple[str, ...] = ("intern", "junior", "mid", "senior", "lead", "director")

# Share of postings per seniority level, and of applicants' starting level.
JOB_SENIORITY_SHARE: tuple[float, ...] = (0.06, 0.22, 0.32, 0.22, 0.12, 0.06)
USER_SENIORITY_SHARE: tuple[float, ...] = (0.08, 0.27, 0.30, 0.20, 0.10, 0.05)

SENIORITY_PHRASE: dict[str, tuple[str, ...]] = {
    "intern": ("Internship", "Student-friendly", "Entry-level internship"),
    "junior": ("Entry-level", "Junior", "Early-career"),
    "mid": ("Experienced", "Mid-level", "Skilled"),
    "senior": ("Senior", "Highly experienced", "Seasoned"),
    "lead": ("Team lead", "Lead", "Hands-on lead"),
    "director": ("Leadership", "Director-level", "Executive"),
}

CROSS_SKILLS: tuple[str, ...] = (
    "communication", "teamwork", "problem solving", "time management", "Microsoft Office", "Excel",
    "project management", "customer service", "bilingual Spanish", "attention to detail",
    "presentation skills", "mentoring", "stakeholder management", "data entry", "leadership",
)
LEADERSHIP_SKILLS: tuple[str, ...] = ("leadership", "mentoring", "stakeholder management", "budgeting")

INDUSTRIES: tuple[Industry, ...] = (
    Industry(
        "Software & Internet", 0.12, ("agile", "Jira", "software development lifecycle"),
        ("Labs", "Software", "Systems", "Technologies", "Digital", "Cloud"),
        (
            _f("Software Engineering", "git, code review, unit testing, CI/CD, Linux",
               _r("Backend Engineer", "Python, Java, REST APIs, PostgreSQL", "build and maintain backend services"),
               _r("Frontend Engineer", "JavaScript, TypeScript, React, CSS", "build responsive web interfaces"),
               _r("Mobile Developer", "Kotlin, Swift, Android, iOS", "ship features in our mobile apps")),
            _f("Data & AI", "pandas, data modeling, A/B testing, dbt, Python, SQL",
               _r("Data Analyst", "SQL, Tableau, Excel, statistics", "turn business data into dashboards and insights"),
               _r("Data Engineer", "Spark, Airflow, SQL, Python", "build reliable data pipelines"),
               _r("Machine Learning Engineer", "PyTorch, Python, MLOps, deep learning", "train and deploy machine learning models")),
            _f("IT & Infrastructure", "Linux, monitoring, ITIL, scripting, cloud infrastructure",
               _r("DevOps Engineer", "Kubernetes, Terraform, Docker, AWS", "automate deployments and cloud infrastructure"),
               _r("Systems Administrator", "Windows Server, Active Directory, networking, bash", "keep servers and user accounts running"),
               _r("Security Analyst", "SIEM, incident response, threat modeling, penetration testing", "detect and respond to security threats")),
        ),
        (("San Francisco", 4.0), ("Seattle", 3.5), ("San Jose", 4.0), ("Austin", 2.5), ("Boston", 1.5)),
    ),
    Industry(
        "Healthcare", 0.14, ("HIPAA", "patient care", "infection control"),
        ("Health", "Medical", "Clinic", "Care", "Hospital", "Health Partners"),
        (
            _f("Nursing", "BLS, vital signs, care planning, patient education, electronic health records",
               _r("Registered Nurse", "patient assessment, medication administration, BLS, electronic health records", "deliver bedside care to adult patients"),
               _r("ICU Nurse", "critical care, ventilator management, ACLS, telemetry", "care for critically ill patients in the ICU"),
               _r("Nurse Practitioner", "diagnosis, prescribing, primary care, patient education", "diagnose and treat patients in primary care")),
            _f("Allied Health", "patient positioning, clinical documentation, CPR, medical terminology",
               _r("Physical Therapist", "rehabilitation, manual therapy, exercise prescription, gait training", "help patients recover mobility after injury"),
               _r("Medical Laboratory Technician", "phlebotomy, specimen processing, hematology, quality control", "run clinical laboratory tests"),
               _r("Radiology Technologist", "X-ray, CT scanning, radiation safety, patient positioning", "perform diagnostic imaging exams")),
            _f("Health Administration", "medical terminology, EHR, scheduling, insurance verification",
               _r("Medical Biller", "ICD-10 coding, CPT coding, claims processing, insurance verification", "code and submit insurance claims"),
               _r("Patient Services Coordinator", "scheduling, patient intake, EHR, insurance verification", "manage patient intake and appointments"),
               _r("Practice Manager", "operations management, budgeting, staff scheduling, compliance", "run the daily operations of a medical practice")),
        ),
        (("Boston", 1.5), ("Houston", 1.3), ("Nashville", 2.0), ("Minneapolis", 1.5)),
    ),
    Industry(
        "Finance & Banking", 0.09, ("regulatory compliance", "financial reporting", "Excel"),
        ("Capital", "Financial", "Bank", "Partners", "Investments", "Credit Union"),
        (
            _f("Accounting", "accounts payable, accounts receivable, QuickBooks, audit support, GAAP",
               _r("Staff Accountant", "general ledger, reconciliations, GAAP, month-end close", "own the general ledger and month-end close"),
               _r("Auditor", "internal audit, SOX compliance, risk assessment, audit workpapers", "test controls and document audit findings"),
               _r("Tax Associate", "tax preparation, tax law, individual returns, corporate tax", "prepare individual and corporate tax returns")),
            _f("Banking", "customer relationship, cash handling, KYC, banking software",
               _r("Personal Banker", "account opening, cross-selling, cash handling, customer relationship", "open accounts and advise branch customers"),
               _r("Loan Officer", "loan origination, credit analysis, underwriting, mortgage products", "originate and close consumer loans"),
               _r("Bank Teller", "cash handling, deposits, balancing drawer, fraud detection", "process deposits and withdrawals at the branch")),
            _f("Investment & Analysis", "financial modeling, Excel, PowerPoint, SQL, Bloomberg",
               _r("Financial Analyst", "financial modeling, forecasting, variance analysis, Excel", "build forecasts and analyse budget variances"),
               _r("Investment Analyst", "valuation, equity research, Bloomberg, portfolio analysis", "research and value investment opportunities"),
               _r("Risk Analyst", "credit risk, market risk, stress testing, statistics", "measure and report credit and market risk")),
        ),
        (("New York", 2.5), ("Charlotte", 3.0), ("Boston", 1.5), ("Chicago", 1.3)),
    ),
    Industry(
        "Retail", 0.12, ("customer service", "retail math", "loss prevention"),
        ("Stores", "Market", "Outfitters", "Goods", "Supply", "Mart"),
        (
            _f("Store Operations", "POS systems, merchandising, opening and closing, cash handling",
               _r("Sales Associate", "customer service, POS systems, merchandising, upselling", "help shoppers find the right products"),
               _r("Cashier", "cash handling, POS systems, returns processing, customer service", "check out customers quickly and accurately"),
               _r("Store Supervisor", "P&L management, staff scheduling, inventory control, sales targets", "run the sales floor and hit store targets")),
            _f("Merchandising", "inventory control, trend analysis, vendor relations, Excel",
               _r("Visual Merchandiser", "visual displays, planograms, store layout, trend awareness", "design window and floor displays"),
               _r("Buyer", "vendor negotiation, assortment planning, open-to-buy, trend analysis", "select and buy the seasonal assortment"),
               _r("Inventory Specialist", "stock replenishment, cycle counts, shrink control, inventory software", "keep store inventory accurate and stocked")),
            _f("E-commerce", "online retail, order management, web analytics, content updates",
               _r("E-commerce Coordinator", "Shopify, product listings, order management, content updates", "manage product listings on our online store"),
               _r("Customer Support Agent", "Zendesk, live chat, returns handling, complaint resolution", "answer customer questions by chat and email"),
               _r("Marketplace Analyst", "Amazon Seller Central, pricing analysis, SQL, conversion optimization", "grow sales on online marketplaces")),
        ),
    ),
    Industry(
        "Hospitality & Food Service", 0.11, ("food safety", "guest service", "teamwork"),
        ("Bistro", "Grill", "Hotels", "Kitchen", "Hospitality", "Cafe"),
        (
            _f("Food & Beverage", "food handling, POS systems, cash handling, fast-paced environment",
               _r("Server", "table service, menu knowledge, POS systems, upselling", "serve guests in a busy dining room"),
               _r("Line Cook", "food preparation, grill, knife skills, food safety", "prepare dishes on the line during service"),
               _r("Barista", "espresso preparation, latte art, cash handling, customer service", "craft coffee drinks and serve customers")),
            _f("Lodging", "reservations systems, guest relations, housekeeping standards, hotel operations",
               _r("Front Desk Agent", "check-in, reservations systems, guest relations, Opera PMS", "welcome guests and handle check-in"),
               _r("Housekeeper", "room cleaning, laundry, sanitation, housekeeping standards", "keep guest rooms clean and ready"),
               _r("Concierge", "guest relations, local knowledge, bookings, problem solving", "arrange bookings and local tips for guests")),
            _f("Events & Kitchen Management", "food costing, staff scheduling, vendor coordination, health code compliance",
               _r("Sous Chef", "menu planning, kitchen management, food costing, food safety", "run the kitchen line and plan menus"),
               _r("Event Coordinator", "event planning, vendor coordination, budgets, banquets", "plan and run banquets and private events"),
               _r("Restaurant Manager", "staff scheduling, P&L management, health code compliance, guest satisfaction", "lead the restaurant team and its numbers")),
        ),
        (("Las Vegas", 4.0), ("Miami", 2.0), ("New York", 1.2), ("Nashville", 1.5)),
    ),
    Industry(
        "Education", 0.07, ("curriculum development", "student engagement", "communication"),
        ("Academy", "Schools", "Learning", "Institute", "Education", "College"),
        (
            _f("K-12 Teaching", "lesson planning, classroom management, assessment, parent communication",
               _r("Elementary Teacher", "lesson planning, classroom management, literacy instruction, parent communication", "teach reading and math to young students"),
               _r("Math Teacher", "algebra, curriculum design, differentiated instruction, assessment", "teach middle and high school math"),
               _r("Special Education Teacher", "IEP development, behavior management, inclusive teaching, assessment", "support students with individual learning plans")),
            _f("Higher Education", "research methods, academic writing, student information systems, grading",
               _r("Lecturer", "course design, lecturing, grading, research", "teach undergraduate courses"),
               _r("Academic Advisor", "student advising, degree planning, retention, student information systems", "guide students through degree planning"),
               _r("Research Assistant", "literature review, data collection, SPSS, research methods", "collect and analyse research data")),
            _f("Training & Tutoring", "instructional design, facilitation, LMS administration, e-learning",
               _r("Tutor", "one-on-one instruction, test prep, SAT, study skills", "tutor students for exams"),
               _r("Instructional Designer", "e-learning, Articulate Storyline, ADDIE, LMS administration", "design online courses and training"),
               _r("Corporate Trainer", "training delivery, needs assessment, onboarding, facilitation", "train new hires and run workshops")),
        ),
        (("Boston", 1.8), ("Pittsburgh", 1.5), ("Columbus", 1.3)),
    ),
    Industry(
        "Manufacturing", 0.08, ("OSHA safety", "lean manufacturing", "quality control"),
        ("Industries", "Manufacturing", "Works", "Fabrication", "Components", "Precision"),
        (
            _f("Production", "blueprint reading, hand tools, quality checks, production targets",
               _r("Machine Operator", "CNC operation, machine setup, blueprint reading, quality checks", "set up and run CNC machines"),
               _r("Assembler", "assembly, hand tools, blueprint reading, quality inspection", "assemble components on the production line"),
               _r("Welder", "MIG welding, TIG welding, metal fabrication, blueprint reading", "weld and fabricate metal parts")),
            _f("Quality & Engineering", "root cause analysis, six sigma, AutoCAD, process improvement",
               _r("Quality Engineer", "root cause analysis, ISO 9001, SPC, CAPA", "drive product quality and corrective actions"),
               _r("Manufacturing Engineer", "lean manufacturing, process improvement, AutoCAD, six sigma", "improve production processes and layouts"),
               _r("Maintenance Technician", "preventive maintenance, PLC troubleshooting, hydraulics, electrical systems", "maintain and repair plant equipment")),
            _f("Plant Management", "production scheduling, KPI tracking, safety, budgeting",
               _r("Production Supervisor", "shift supervision, production scheduling, safety, KPI tracking", "supervise a production shift"),
               _r("Plant Manager", "operations management, budgeting, lean manufacturing, safety culture", "run plant operations end to end"),
               _r("EHS Specialist", "OSHA compliance, safety audits, incident investigation, environmental permits", "keep the plant safe and compliant")),
        ),
        (("Detroit", 4.0), ("Columbus", 1.5), ("Indianapolis", 2.0), ("Cincinnati", 2.0)),
    ),
    Industry(
        "Logistics & Transportation", 0.09, ("logistics safety", "time management", "inventory management"),
        ("Logistics", "Freight", "Transport", "Express", "Shipping", "Carriers"),
        (
            _f("Warehouse", "RF scanners, warehouse safety, shipping and receiving, WMS",
               _r("Warehouse Associate", "picking and packing, forklift operation, shipping and receiving, RF scanners", "pick, pack and ship customer orders"),
               _r("Forklift Operator", "forklift operation, pallet jack, load securing, warehouse safety", "move pallets safely around the warehouse"),
               _r("Inventory Control Clerk", "cycle counts, WMS, inventory reconciliation, data entry", "keep warehouse stock records accurate")),
            _f("Driving & Delivery", "safe driving, GPS navigation, DOT regulations, customer service",
               _r("Truck Driver", "CDL class A, route planning, DOT regulations, vehicle inspection", "haul freight on regional routes"),
               _r("Delivery Driver", "route delivery, customer service, GPS navigation, safe driving", "deliver packages to homes and businesses"),
               _r("Dispatcher", "dispatch software, route optimization, radio communication, scheduling", "plan routes and dispatch drivers")),
            _f("Supply Chain", "ERP systems, SAP, Excel, vendor management, demand planning",
               _r("Supply Chain Analyst", "demand forecasting, SQL, Excel, ERP systems", "forecast demand and optimise stock levels"),
               _r("Logistics Coordinator", "shipment tracking, freight booking, customs documentation, carrier relations", "book and track inbound and outbound freight"),
               _r("Procurement Specialist", "purchasing, vendor management, contract negotiation, SAP", "source suppliers and negotiate purchase orders")),
        ),
        (("Memphis", 4.0), ("Dallas", 1.5), ("Atlanta", 1.8), ("Indianapolis", 1.5)),
    ),
    Industry(
        "Marketing & Media", 0.05, ("marketing analytics", "content strategy", "creativity"),
        ("Media", "Creative", "Agency", "Studios", "Communications", "Brands"),
        (
            _f("Digital Marketing", "Google Analytics, marketing automation, A/B testing, HubSpot",
               _r("SEO Specialist", "SEO, keyword research, Google Analytics, content optimization", "grow organic search traffic"),
               _r("Social Media Manager", "social media strategy, content calendar, community management, paid social", "run our social media channels"),
               _r("Performance Marketer", "Google Ads, PPC, conversion tracking, budget management", "run paid acquisition campaigns")),
            _f("Content & Creative", "Adobe Creative Suite, storytelling, editing, brand guidelines",
               _r("Copywriter", "copywriting, brand voice, editing, storytelling", "write copy for ads, web and email"),
               _r("Graphic Designer", "Adobe Photoshop, Illustrator, typography, branding", "design visual assets for campaigns"),
               _r("Video Producer", "video editing, Premiere Pro, storyboarding, motion graphics", "shoot and edit video content")),
            _f("Communications", "media relations, CRM, event marketing, writing",
               _r("PR Specialist", "media relations, press releases, crisis communication, pitching", "pitch stories and manage press relations"),
               _r("Marketing Coordinator", "campaign coordination, email marketing, event marketing, CRM", "coordinate campaigns and events"),
               _r("Brand Manager", "brand strategy, market research, product positioning, budget management", "own brand strategy and positioning")),
        ),
        (("New York", 2.5), ("Los Angeles", 2.5), ("Chicago", 1.3)),
    ),
    Industry(
        "Construction & Trades", 0.06, ("OSHA 10", "jobsite safety", "blueprint reading"),
        ("Builders", "Construction", "Contractors", "Homes", "Electric", "Plumbing"),
        (
            _f("Skilled Trades", "power tools, troubleshooting, building codes, apprenticeship",
               _r("Electrician", "electrical wiring, NEC code, conduit bending, troubleshooting", "install and repair electrical systems"),
               _r("Plumber", "pipe fitting, plumbing code, drain cleaning, water heaters", "install and repair plumbing systems"),
               _r("Carpenter", "framing, finish carpentry, power tools, blueprint reading", "frame and finish residential buildings")),
            _f("Site Operations", "material handling, equipment maintenance, concrete work, crew coordination",
               _r("Construction Laborer", "site cleanup, material handling, power tools, concrete work", "support crews on active job sites"),
               _r("Heavy Equipment Operator", "excavator operation, bulldozer, grading, equipment maintenance", "operate excavators and graders"),
               _r("Site Supervisor", "crew supervision, scheduling, safety inspections, subcontractor coordination", "supervise crews and subcontractors on site")),
            _f("Construction Management", "construction scheduling, cost control, Procore, AutoCAD",
               _r("Construction Project Manager", "construction scheduling, budgeting, Procore, client relations", "deliver building projects on time and budget"),
               _r("Estimator", "cost estimating, quantity takeoff, bid preparation, Bluebeam", "prepare cost estimates and bids"),
               _r("Civil Engineer", "AutoCAD Civil 3D, site design, stormwater management, structural analysis", "design site and infrastructure plans")),
        ),
        (("Phoenix", 1.8), ("Dallas", 1.5), ("Denver", 1.5), ("Las Vegas", 1.3)),
    ),
    Industry(
        "Legal & Public Service", 0.03, ("legal research", "confidentiality", "attention to detail"),
        ("Law", "Legal", "LLP", "Attorneys", "Counsel", "Advocates"),
        (
            _f("Legal Practice", "legal writing, case management, document review, e-filing",
               _r("Paralegal", "legal research, document drafting, case management, e-filing", "draft filings and manage case files"),
               _r("Associate Attorney", "litigation, legal writing, depositions, contract law", "represent clients in litigation"),
               _r("Legal Assistant", "calendaring, document management, client intake, dictation", "support attorneys with scheduling and documents")),
            _f("Compliance", "policy review, risk assessment, regulatory compliance, audit support",
               _r("Compliance Analyst", "regulatory compliance, AML, KYC, policy review", "monitor transactions and compliance policies"),
               _r("Contract Manager", "contract drafting, negotiation, contract lifecycle management, redlining", "draft and negotiate commercial contracts"),
               _r("Privacy Specialist", "GDPR, data protection, privacy impact assessments, policy writing", "run the data privacy program")),
            _f("Public Service", "public service, report writing, records management, community outreach",
               _r("Court Clerk", "court records, docket management, data entry, public service", "maintain court records and dockets"),
               _r("Policy Analyst", "policy research, legislative analysis, report writing, stakeholder engagement", "analyse legislation and write policy briefs"),
               _r("Case Worker", "case management, client advocacy, needs assessment, community resources", "connect clients with community services")),
        ),
        (("Washington DC", 5.0), ("New York", 1.3), ("Sacramento", 3.0)),
    ),
    Industry(
        "Energy & Utilities", 0.04, ("HSE", "safety procedures", "technical troubleshooting"),
        ("Energy", "Power", "Utilities", "Solar", "Grid", "Renewables"),
        (
            _f("Renewables", "electrical wiring, climbing, renewable energy, data analysis",
               _r("Solar Installer", "solar panel installation, electrical wiring, roof work, fall protection", "install rooftop and ground solar systems"),
               _r("Wind Turbine Technician", "turbine maintenance, climbing, hydraulics, electrical troubleshooting", "service and repair wind turbines"),
               _r("Energy Analyst", "energy modeling, data analysis, Excel, regulatory filings", "model energy demand and prices")),
            _f("Power & Grid", "high-voltage safety, SCADA, power systems, switching procedures",
               _r("Lineworker", "power line maintenance, climbing, high-voltage safety, bucket truck", "build and repair overhead power lines"),
               _r("Power Plant Operator", "control room operation, turbine systems, SCADA, safety procedures", "operate generation units from the control room"),
               _r("Electrical Engineer", "power systems, substation design, AutoCAD, relay protection", "design substations and protection schemes")),
            _f("Oil & Gas", "field safety, pipeline operations, process control, equipment maintenance",
               _r("Field Technician", "equipment maintenance, pipeline inspection, troubleshooting, field safety", "inspect and maintain field equipment"),
               _r("Drilling Engineer", "well planning, drilling operations, reservoir analysis, HSE", "plan and supervise drilling programs"),
               _r("Process Operator", "process control, DCS, plant operations, safety procedures", "run process units safely")),
        ),
        (("Houston", 5.0), ("Denver", 1.5), ("Phoenix", 1.3)),
    ),
)

# (city, relative size): roughly US metro weights, enough variety for a location signal.
CITIES: tuple[tuple[str, float], ...] = (
    ("New York", 8.0), ("Los Angeles", 5.0), ("Chicago", 3.5), ("Houston", 3.0), ("Dallas", 3.0),
    ("Phoenix", 2.2), ("Philadelphia", 2.2), ("Atlanta", 2.2), ("Washington DC", 2.2), ("Miami", 2.0),
    ("Boston", 2.0), ("San Francisco", 2.0), ("Seattle", 1.8), ("Detroit", 1.6), ("Minneapolis", 1.5),
    ("San Diego", 1.5), ("Denver", 1.4), ("Charlotte", 1.2), ("Austin", 1.2), ("Nashville", 1.1),
    ("Columbus", 1.1), ("Indianapolis", 1.1), ("Las Vegas", 1.1), ("Portland", 1.1), ("San Jose", 1.0),
    ("Pittsburgh", 1.0), ("Cincinnati", 1.0), ("Sacramento", 1.0), ("Memphis", 0.7), ("Salt Lake City", 0.7),
)

COMPANY_HEADS: tuple[str, ...] = (
    "North", "Blue", "Summit", "Iron", "Silver", "Bright", "Green", "Red", "Oak", "Pine", "Stone",
    "River", "Lake", "Sun", "Star", "Clear", "Swift", "True", "Prime", "Golden", "Harbor", "Maple",
    "Cedar", "Eagle", "Falcon", "Atlas", "Apex", "Nova", "Vertex", "Crest", "Bay", "Metro",
    "Pioneer", "Liberty", "Frontier", "Keystone", "Granite", "Coral", "Ever", "Horizon",
)
COMPANY_TAILS: tuple[str, ...] = (
    "wind", "field", "bridge", "point", "view", "line", "way", "stone", "wood", "gate", "ridge",
    "path", "light", "brook", "hill", "port", "vale", "spring",
)

SCHOOL_PREFIXES: tuple[str, ...] = ("University of", "State College of", "Community College of")

# One-line description templates; every field is filled, wording varies per job.
DESCRIPTION_TEMPLATES: tuple[str, ...] = (
    "{company} is hiring {a_title} in {city} to {duty}. Skills: {s1}, {s2}.",
    "Join the {family} team at {company} in {city} as {a_title} and {duty}.",
    "{title} wanted in {city}: {duty} with {s1} and {s2} at {company}.",
    "As {a_title} at {company} ({city}) you will {duty}; experience with {s1} is a plus.",
    "{company}, a {industry} employer in {city}, seeks {a_title} to {duty}.",
    "{level_phrase} {role} role in {city}: {duty}. Must know {s1} and {s2}.",
    "{city} based {company} needs {a_title} who can {duty} using {s1}.",
    "We are looking for {a_title} to {duty} at our {city} site ({company}).",
)
