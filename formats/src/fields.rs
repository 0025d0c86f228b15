//! Typed fixed-offset fields in on-disk structures.
//!
//! On-disk headers are modelled as a byte array plus a table of typed fields
//! (`Be<u32>` at offset 8, ...), so that layout lives in one place and every
//! read or write names its byte order.

use std::marker::PhantomData;

/// An integer that can be stored in an on-disk field.
pub(crate) trait Scalar: Copy {
    /// Width in bytes.
    const SIZE: usize;
    fn from_be(b: &[u8]) -> Self;
    fn from_le(b: &[u8]) -> Self;
    fn put_be(self, b: &mut [u8]);
    fn put_le(self, b: &mut [u8]);
}

macro_rules! scalar {
    ($($t:ty),*) => {$(
        impl Scalar for $t {
            const SIZE: usize = std::mem::size_of::<$t>();
            fn from_be(b: &[u8]) -> Self {
                let mut a = [0u8; std::mem::size_of::<$t>()];
                a.copy_from_slice(&b[..Self::SIZE]);
                <$t>::from_be_bytes(a)
            }
            fn from_le(b: &[u8]) -> Self {
                let mut a = [0u8; std::mem::size_of::<$t>()];
                a.copy_from_slice(&b[..Self::SIZE]);
                <$t>::from_le_bytes(a)
            }
            fn put_be(self, b: &mut [u8]) {
                b[..Self::SIZE].copy_from_slice(&self.to_be_bytes());
            }
            fn put_le(self, b: &mut [u8]) {
                b[..Self::SIZE].copy_from_slice(&self.to_le_bytes());
            }
        }
    )*};
}
scalar!(u8, u16, u32, u64);

/// A big-endian field at a fixed byte offset.
pub(crate) struct Be<T>(usize, PhantomData<T>);

/// A little-endian field at a fixed byte offset.
pub(crate) struct Le<T>(usize, PhantomData<T>);

/// A byte-string field at a fixed offset.
pub(crate) struct Bytes<const N: usize>(usize);

impl<T: Scalar> Be<T> {
    pub(crate) const fn at(offset: usize) -> Self {
        Be(offset, PhantomData)
    }
    pub(crate) fn get(&self, buf: &[u8]) -> T {
        T::from_be(&buf[self.0..])
    }
    pub(crate) fn set(&self, buf: &mut [u8], v: T) {
        v.put_be(&mut buf[self.0..])
    }
    /// Byte offset of the field.
    pub(crate) const fn offset(&self) -> usize {
        self.0
    }
}

impl<T: Scalar> Le<T> {
    pub(crate) const fn at(offset: usize) -> Self {
        Le(offset, PhantomData)
    }
    pub(crate) fn get(&self, buf: &[u8]) -> T {
        T::from_le(&buf[self.0..])
    }
    pub(crate) fn set(&self, buf: &mut [u8], v: T) {
        v.put_le(&mut buf[self.0..])
    }
}

impl<const N: usize> Bytes<N> {
    pub(crate) const fn at(offset: usize) -> Self {
        Bytes(offset)
    }
    pub(crate) fn get(&self, buf: &[u8]) -> [u8; N] {
        let mut a = [0u8; N];
        a.copy_from_slice(&buf[self.0..self.0 + N]);
        a
    }
    pub(crate) fn set(&self, buf: &mut [u8], v: &[u8; N]) {
        buf[self.0..self.0 + N].copy_from_slice(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_round_trip_in_both_orders() {
        let mut buf = [0u8; 16];
        Be::<u32>::at(0).set(&mut buf, 0x0102_0304);
        Le::<u32>::at(4).set(&mut buf, 0x0102_0304);
        assert_eq!(&buf[..8], &[1, 2, 3, 4, 4, 3, 2, 1]);
        assert_eq!(Be::<u32>::at(0).get(&buf), 0x0102_0304);
        assert_eq!(Le::<u32>::at(4).get(&buf), 0x0102_0304);
        Bytes::<4>::at(8).set(&mut buf, b"abcd");
        assert_eq!(Bytes::<4>::at(8).get(&buf), *b"abcd");
        assert_eq!(Be::<u16>::at(8).get(&buf), 0x6162);
    }
}
