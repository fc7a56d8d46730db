fn main() {
    println!("imexdepth");
}
